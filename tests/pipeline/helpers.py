"""Test helpers: free loopback ports and config files for small graphs."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def linked(*pairs: str) -> str:
    """``[[link]]`` tables, one per ``"source -> target"``."""
    return "".join(f'\n[[link]]\nfrom = "{a}"\nto = "{b}"\n' for a, b in (p.split(" -> ") for p in pairs))


def write_config(path, text: str):
    path.write_text(text)
    return path


def chain_config(path, recording, out, graph: str = "", replay: str = "", addresses=("", ""),
                 link: str = ""):
    """Write a replay -> passthrough -> npy graph; extra TOML lines go into [graph], the replay
    source and every link; ``addresses`` are the two links' addresses (empty: the default)."""
    links = "".join(
        f'\n[[link]]\nfrom = "{source}"\nto = "{target}"\n{link}\n'
        + (f'address = "{address}"\n' if address else "")
        for (source, target), address in zip((("replay", "pass"), ("pass", "record")), addresses))
    return write_config(path, f"""
[graph]
{graph}

[source.replay]
type = "replay"
path = "{recording}"
{replay}

[stage.pass]
type = "passthrough"

[sink.record]
type = "npy"
path = "{out}"
{links}""")


def snn_decoder_tables(model, k: int) -> str:
    """TOML ``[stage.snn]`` and ``[stage.decoder]`` tables running ``model``, the decoder's count
    rule deciding at a lead of ``k`` spikes."""
    return f"""
[stage.snn]
type = "snn"
model = "{model}"

[stage.decoder]
type = "decoder"
model = "{model}"
rule = "count"
k = {k}
"""
