"""Soak: the synthetic sensor at 1 Mev/s, 640 x 480, through the whole camera-rate graph of
bench/bench_graph.py (scale -> denoise -> hots -> snn -> decoder -> jsonl, the sensor's link
live, the others lossless) for a minute of real time, in worker processes: resident memory
stays flat after warm-up and no lossless link loses a packet."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

from bench.bench_graph import camera_config
from tests.conftest import ROOT

SECONDS = 60
WARM_S = 15  # memory is measured from here on: kernels loaded, queues filled, heaps settled


def worker_rss_kib(orchestrator: int) -> dict[str, int]:
    """Resident memory (KiB) of each worker process (named evpipe:<nodes>) of a graph."""
    out = {}
    children = pathlib.Path(f"/proc/{orchestrator}/task/{orchestrator}/children").read_text().split()
    for pid in children:
        try:
            name = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().strip()
            status = pathlib.Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if name.startswith("evpipe:"):
            out[name] = int(next(line.split()[1] for line in status.splitlines()
                                 if line.startswith("VmRSS:")))
    return out


def test_a_minute_at_a_million_events_per_second_keeps_memory_flat_and_loses_nothing(tmp_path):
    config = camera_config(tmp_path, 1e6, SECONDS)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(WARM_S)
        first = worker_rss_kib(proc.pid)
        time.sleep(SECONDS - WARM_S - 5)
        last = worker_rss_kib(proc.pid)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert set(first) == set(last) and len(first) >= 2, (first, last)
    for name, rss in last.items():
        assert rss < first[name] * 1.05, f"{name}: {first[name]} -> {rss} KiB"
    rows = {line.split()[0]: line.split() for line in stdout.splitlines()
            if line.split()[:1] in (["scale"], ["denoise"], ["hots"], ["snn"], ["decoder"], ["jsonl"])}
    assert int(rows["scale"][2].replace(",", "")) > 0.9 * SECONDS * 1e6  # events taken in
    for node in ("denoise", "hots", "snn", "decoder", "jsonl"):  # behind lossless links
        assert rows[node][5] == "0", rows[node]
