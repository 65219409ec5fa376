"""DV network source against a real dv-processing NetworkWriter on loopback, restarted mid-stream."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import AEDAT4_SAMPLE, ROOT

from sensors.network import NetworkSource
from sensors.readers import read_all

SERVER = ROOT / "tests" / "sensors" / "dv_server.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(address: str, start: int, stop: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, str(SERVER), address, str(start), str(stop)],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"})
    assert server.stdout.readline().strip() == "listening"
    return server


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_every_event_arrives_across_a_server_restart(transport, tmp_path):
    _, events = read_all(AEDAT4_SAMPLE)
    assert len(events) == 111_954
    half = len(events) // 2
    if transport == "tcp":
        port = free_port()
        address, where = str(port), dict(port=port)
    else:
        address = str(tmp_path / "dv.sock")
        where = dict(socket=address)
    first = start_server(address, 0, half)
    source = NetworkSource("dv", backoff_s=0.02, backoff_max_s=0.2, **where)
    assert source.describe() == (f"unix:{address}" if transport == "unix" else f"tcp://127.0.0.1:{port}")
    received, headers, taken = [], [], []
    started = time.time_ns()

    def consume():
        for packet in source.packets():
            taken.append(time.time_ns())
            received.append(packet.records)
            headers.append(packet.header)
            if sum(map(len, received)) >= len(events):
                source.stop()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    try:
        assert first.communicate(timeout=60)[0].strip() == f"sent {half}"
        second = start_server(address, half, len(events))  # the server comes back at the same address
        assert second.communicate(timeout=60)[0].strip() == f"sent {len(events) - half}"
        consumer.join(30)
    finally:
        source.stop()
    assert not consumer.is_alive()
    assert source.reconnects == 1
    got = np.concatenate(received)
    assert len(got) == len(events) and (got == events).all()
    assert all((h.width, h.height) == (320, 240) for h in headers)
    assert all(h.t_last - h.t_first < 1000 and h.count <= 10_000 for h in headers)
    # each packet carries the arrival time of its batch: after the start, before it was handed on
    origins = [h.origin_ns for h in headers]
    assert started < origins[0] and origins == sorted(origins)
    assert all(origin <= at for origin, at in zip(origins, taken))


def test_a_source_with_no_server_gives_up_after_its_retries_in_two_short_lines(caplog):
    source = NetworkSource("dv", port=free_port(), backoff_s=0.02, backoff_max_s=0.05, retries=4)
    with caplog.at_level("INFO", logger="sensors.dv_stream"):
        assert list(source.packets()) == []  # the stream ends by itself
    lines = [r.getMessage() for r in caplog.records if r.name == "sensors.dv_stream"]
    assert len(lines) == 2, lines
    assert "retrying with backoff up to 0.1 s, 4 attempts at most" in lines[0]
    assert lines[1].endswith("gave up after 4 attempts")
    assert all(len(line) < 300 and "\n" not in line for line in lines)


def test_end_on_close_ends_the_stream_when_the_server_closes_it():
    _, events = read_all(AEDAT4_SAMPLE)
    half = len(events) // 2
    port = free_port()
    server = start_server(str(port), 0, half)
    source = NetworkSource("dv", port=port, backoff_s=0.02, backoff_max_s=0.2, end_on_close=True)
    received = []
    consumer = threading.Thread(target=lambda: received.extend(p.records for p in source.packets()),
                                daemon=True)
    consumer.start()
    try:
        assert server.communicate(timeout=60)[0].strip() == f"sent {half}"
        consumer.join(30)
    finally:
        source.stop()
    assert not consumer.is_alive()  # ended by the server, not by stop()
    got = np.concatenate(received)
    assert len(got) == half and (got == events[:half]).all()
