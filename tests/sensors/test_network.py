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
