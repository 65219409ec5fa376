"""Test helpers: free loopback ports and config files for small graphs."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path, text: str):
    path.write_text(text)
    return path
