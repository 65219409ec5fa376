"""CURVE links over real tcp sockets on loopback (pipeline/security.py): the right
certificates carry every packet, a client with a key the sender does not accept or with no
keys receives nothing; a message above a receiver's limit is refused; certificate mistakes are
one-line errors before anything runs."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import zmq

from pipeline.core import wire
from pipeline.core.events import EVENT_DTYPE
from pipeline.core.packet import events_packet
from pipeline.runtime.links import LOSSLESS, Receiver, Sender
from pipeline.security import Guard, write_keys
from tests.conftest import AEDAT4_SAMPLE, ROOT
from tests.pipeline.helpers import chain_config, free_port


@pytest.fixture
def keys(tmp_path):
    """Certificates: the sender's (camera), an accepted client's (robot, its public certificate
    in clients/), and a stranger's, not accepted."""
    write_keys(str(tmp_path), "camera")
    write_keys(str(tmp_path), "robot")
    (tmp_path / "clients").mkdir()
    (tmp_path / "clients" / "robot.key").write_bytes((tmp_path / "robot.key").read_bytes())
    write_keys(str(tmp_path), "stranger")
    return tmp_path


def frames(seq: int, n: int = 100) -> list:
    records = np.zeros(n, EVENT_DTYPE)
    records["t"] = np.arange(n)
    return wire.encode(events_packet("camera", seq, records, 320, 240))


def offer(sender: Sender, receiver: Receiver, n: int = 100, tries: int = 30):
    """Send packets of ``n`` events until one arrives (the handshake takes a moment); the first
    packet received, or None when none came."""
    for seq in range(tries):
        try:
            sender.sock.send_multipart(frames(seq, n), zmq.NOBLOCK)
        except zmq.Again:  # no peer has completed a handshake
            pass
        got = receiver.receive(timeout_ms=100)
        if got is not None:
            return got
    return None


@pytest.mark.parametrize("client, delivered", [("robot", True), ("stranger", False), (None, False)])
def test_only_an_accepted_client_receives(keys, client, delivered):
    ctx = zmq.Context()
    guard = Guard(ctx)
    address = f"tcp://127.0.0.1:{free_port()}"
    sender = Sender(ctx, address, LOSSLESS, curve=(guard, str(keys / "camera"),
                                                   str(keys / "clients"), "camera->robot"))
    curve = (str(keys / "camera"), str(keys / client)) if client else None
    receiver = Receiver(ctx, address, LOSSLESS, curve=curve)
    try:
        got = offer(sender, receiver)
        assert (got is not None) == delivered
        if delivered:
            assert got.header.stream == "camera" and len(got.records) == 100
        assert (guard.refused > 0) == (client == "stranger")  # a client with no keys: no ZAP
    finally:
        receiver.close()
        sender.sock.close(linger=0)
        guard.stop()
        ctx.term()


def test_a_message_above_the_receivers_limit_is_refused_before_it_is_received():
    """ZeroMQ drops the connection of a peer announcing more than ``max_message_bytes``: the
    receiver never allocates it, and never sees it."""
    ctx = zmq.Context()
    address = f"tcp://127.0.0.1:{free_port()}"
    sender = Sender(ctx, address, LOSSLESS)
    receiver = Receiver(ctx, address, LOSSLESS, max_message_bytes=64 * 1024)
    try:
        assert offer(sender, receiver, n=100) is not None  # 1.6 kB
        assert offer(sender, receiver, n=10_000, tries=10) is None  # 160 kB: refused
    finally:
        receiver.close()
        sender.sock.close(linger=0)
        ctx.term()


def curve_graph(tmp_path, keys, client: str = "robot") -> str:
    """replay -> pass -> record, the second link over tcp with CURVE, in worker processes."""
    link = (f'curve_server = "{keys / "camera"}"\ncurve_client = "{keys / client}"\n'
            f'curve_clients = "{keys / "clients"}"')
    path = chain_config(tmp_path / "graph.toml", AEDAT4_SAMPLE, tmp_path / "out.npy",
                        graph='runner = "processes"\nsummary = false\nplacement = "per_node"',
                        addresses=("", f"tcp://127.0.0.1:{free_port()}"))
    text = path.read_text().replace('from = "pass"\nto = "record"\n',
                                    f'from = "pass"\nto = "record"\n{link}\n')
    path.write_text(text)
    return str(path)


def test_a_graph_with_a_curve_link_delivers_every_event(tmp_path, keys):
    config = curve_graph(tmp_path, keys)
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", config], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(np.load(tmp_path / "out.npy")) == 111_954


def test_a_missing_certificate_is_a_one_line_error_naming_the_file(tmp_path, keys):
    config = curve_graph(tmp_path, keys, client="nobody")
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", config], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert f"link[1] (pass->record): {keys / 'nobody'}.key_secret: not a readable ZeroMQ certificate" in done.stderr
    assert "Traceback" not in done.stderr


def test_keys_keep_an_existing_pair_and_refuse_a_name_with_a_folder(tmp_path):
    public, secret = write_keys(str(tmp_path), "camera")
    kept = pathlib.Path(secret).read_bytes()
    with pytest.raises(FileExistsError, match="exists already"):
        write_keys(str(tmp_path), "camera")
    assert pathlib.Path(secret).read_bytes() == kept
    with pytest.raises(ValueError, match="must be a plain file name"):
        write_keys(str(tmp_path / "sub"), "../outside")
    assert not (tmp_path / "outside.key").exists()
