"""`evpipe top` against the metrics stream of a real running graph, and against bad publishers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import zmq

from pipeline.runtime.config import load
from pipeline.runtime.graph import run_threads
from tests.conftest import AEDAT4_SAMPLE, ROOT
from tests.pipeline.helpers import free_port, write_config

EVPIPE = [sys.executable, "-m", "pipeline.cli"]


def top(*args, timeout=60):
    return subprocess.run(EVPIPE + ["top", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_top_once_shows_every_node_of_a_running_graph(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    config = load(write_config(tmp_path / "graph.toml", f"""
[graph]
summary = false
metrics_interval_s = 0.3
metrics_address = "{address}"

[source.camera]
type = "replay"
path = "{AEDAT4_SAMPLE}"
speed = 1.0
loop = true

[stage.pass]
type = "passthrough"

[sink.record]
type = "jsonl"
path = "{tmp_path / 'segments.jsonl'}"

[[link]]
from = "camera"
to = "pass"

[[link]]
from = "pass"
to = "record"
"""))
    stop = threading.Event()
    graph = threading.Thread(target=run_threads, args=(config, stop), daemon=True)
    graph.start()
    try:
        result = top(address, "--once", "--interval", "1.0")
    finally:
        stop.set()
        graph.join(30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["node", "kind", "events/s", "packets/s", "drops", "malformed",
                                "queue", "p50", "us", "p99", "us", "state"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"camera", "pass", "record"}
    # the recording plays at 190k events/s in real time: every node sees events flowing
    for name in rows:
        rate = float(rows[name][2].replace(",", ""))
        assert 20_000 < rate < 2_000_000, (name, rate)
        assert rows[name][-1] == "running"
    assert rows["pass"][7] != "-"  # latency percentiles from a stage that processed packets


def test_top_survives_malformed_messages_and_says_when_nothing_comes(tmp_path):
    address = f"ipc://{tmp_path}/metrics.sock"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(address)
    good = {"node": "cam", "kind": "source", "events_in_per_s": 0, "events_out_per_s": 1234.0,
            "packets_in_per_s": 0, "packets_out_per_s": 5.0, "dropped": 2, "gaps": 1, "backlog": 0,
            "malformed": {}, "latency_p50_us": None, "latency_p99_us": None, "final": False, "error": None}
    stop = threading.Event()

    def publish():
        while not stop.is_set():
            pub.send_multipart([b"metrics", b"{not json"])
            pub.send_multipart([b"metrics", json.dumps({"node": "x"}).encode()])
            pub.send_multipart([b"metrics"])
            pub.send_multipart([b"metrics", json.dumps(good).encode()])
            time.sleep(0.05)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        result = top(address, "--count", "2", "--interval", "0.3")
    finally:
        stop.set()
        publisher.join(5)
        pub.close(linger=0)
        ctx.term()
    assert result.returncode == 0, result.stderr
    tables = result.stdout.strip().split("\n\n")
    assert len(tables) == 2
    row = tables[-1].splitlines()[2].split()
    assert row[:5] == ["cam", "source", "1,234", "5", "3"]
    assert "malformed metrics message(s) ignored" in tables[-1]
    # nobody publishing: a clear message and exit code 1, not a hang
    silent = top(f"ipc://{tmp_path}/nobody.sock", "--once", "--timeout", "1")
    assert silent.returncode == 1
    assert "no metrics from" in silent.stderr and "metrics_address" in silent.stderr
