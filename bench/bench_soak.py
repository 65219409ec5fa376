"""Soak: the camera-rate graph at 1 Mev/s for minutes of real time, in worker processes.

The synthetic sensor at 640 x 480 px and 1 Mev/s through the whole camera-rate graph of
``bench.bench_graph`` (scale -> denoise -> hots -> snn -> decoder -> jsonl; the sensor's link
live, every other link lossless), for ``--minutes`` of real time. Measured: the resident memory
(``VmRSS``) of every worker process (named ``evpipe:<nodes>``), sampled every ``SAMPLE_S`` s
from the end of the warm-up (kernels loaded, queues filled, heaps settled; counted from the
moment the sources start) until 5 s before the end; the packets lost
behind lossless links (dropped or missing: none is allowed); the packets the live sensor link
dropped (allowed, counted); the decoder's end-to-end latency p50 and p99 (ms, from the sensor's
stamp to the decoder's output, over the whole run).

Goals, no peer (no other program runs this graph): memory growth after warm-up under 5 % in
every worker, no loss behind lossless links. tests/pipeline/test_soak.py runs ``soak`` for a
minute and asserts the same.

    python -m bench bench_soak               # one minute (what make bench runs)
    python -m bench bench_soak --minutes 10  # docs/benchmarks.md, "Soak"
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import threading
import time
from dataclasses import dataclass, field

from bench.bench_graph import camera_config

RATE = 1e6  # events/s
SAMPLE_S = 5.0  # between two memory samples, s
GROWTH_GOAL = 5.0  # % of the first sample after warm-up
LOSSLESS = ("denoise", "hots", "snn", "decoder", "jsonl")  # nodes behind lossless links


def worker_rss_kib(orchestrator: int) -> dict[str, int]:
    """Resident memory (KiB) of each worker process (named evpipe:<nodes>) that the main thread
    of process ``orchestrator`` started."""
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


@dataclass
class Soak:
    """What one soak run measured: ``samples`` of each worker's resident memory (KiB) after
    warm-up (``warm_s`` after the sources started), in time order, and the graph's final per-node snapshots
    (``pipeline.runtime.metrics``)."""

    seconds: float
    warm_s: float
    ok: bool
    snapshots: dict
    samples: list[dict[str, int]] = field(default_factory=list)

    def growth_pct(self, since: int = 0) -> dict[str, float]:
        """Each worker's memory growth from sample ``since`` to the last one, % of the first."""
        first, start, last = self.samples[0], self.samples[since], self.samples[-1]
        return {name: 100.0 * (last[name] - start[name]) / first[name] for name in first
                if name in start and name in last}

    def lost_behind_lossless(self) -> int:
        """Packets dropped or missing at the nodes behind lossless links."""
        return sum(self.snapshots[node]["dropped"] + self.snapshots[node]["gaps"] for node in LOSSLESS)

    def events_in(self) -> int:
        """Events the scale stage (the first node after the sensor) received."""
        return self.snapshots["scale"]["records_in"]


def warm_up_s(seconds: float) -> float:
    """The warm-up before memory is measured: a quarter of a minute's run, a tenth of a longer
    one (at most a minute)."""
    return min(60.0, max(15.0, seconds / 10))


def soak(folder: pathlib.Path, seconds: float) -> Soak:
    """Run the camera-rate graph at ``RATE`` for ``seconds`` of real time from this process
    (its workers are processes of its main thread), sampling their memory every ``SAMPLE_S`` s;
    kept: the samples from ``warm_up_s(seconds)`` after the sources started until 5 s before
    they ended."""
    from pipeline.runtime.config import load
    from pipeline.runtime.graph import run

    config = load(camera_config(folder, RATE, int(seconds)))
    timed: list[tuple[float, dict[str, int]]] = []  # (s since the run began, memory)
    done = threading.Event()
    began = time.monotonic()

    def sample() -> None:
        while not done.wait(SAMPLE_S - (time.monotonic() - began) % SAMPLE_S):
            timed.append((time.monotonic() - began, worker_rss_kib(os.getpid())))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = run(config)
    done.set()
    sampler.join()
    warm_s = warm_up_s(seconds)
    started = result.ready_s or 0.0
    kept = [rss for t, rss in timed if started + warm_s <= t <= started + seconds - 5]
    return Soak(seconds, warm_s, result.ok, result.snapshots, kept)


def run(options: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m bench bench_soak")
    parser.add_argument("--minutes", type=float, default=1.0, help="real time to run")
    minutes = parser.parse_args(options or []).minutes
    with tempfile.TemporaryDirectory() as tmp:
        result = soak(pathlib.Path(tmp), minutes * 60)
    growth = result.growth_pct()
    decoder = result.snapshots["decoder"]
    common = {"minutes": minutes, "warm_up_s": result.warm_s, "memory_samples": len(result.samples),
              "events_in": result.events_in(), "graph_ok": result.ok,
              "load_avg_1_5_15_min": "/".join(f"{x:.1f}" for x in os.getloadavg())}
    first, last = result.samples[0], result.samples[-1]
    middle = result.samples[len(result.samples) // 2]
    memory = {name.replace("evpipe:", "rss_kib:"): f"{first[name]}->{middle[name]}->{last[name]}"
              for name in first}  # first, middle and last sample: a leak grows in both halves
    second_half = result.growth_pct(len(result.samples) // 2)
    return [
        {"name": f"soak {minutes:g} min at 1 Mev/s: largest worker memory growth after warm-up",
         "ours": max(growth.values()), "peer": None, "unit": "%", "ratio": None,
         "target": GROWTH_GOAL, "lower_is_better": True, **common, **memory,
         "largest_growth_in_the_second_half_pct": round(max(second_half.values()), 2)},
        {"name": f"soak {minutes:g} min at 1 Mev/s: packets lost behind lossless links",
         "ours": result.lost_behind_lossless(), "peer": None, "unit": "packets", "ratio": None,
         "target": 0, "lower_is_better": True,
         "lost_on_live_sensor_link": result.snapshots["scale"]["gaps"]},
        {"name": f"soak {minutes:g} min at 1 Mev/s: decoder e2e latency p50",
         "ours": decoder["e2e_p50_us"] / 1e3, "peer": None, "unit": "ms", "ratio": None,
         "target": None},
        {"name": f"soak {minutes:g} min at 1 Mev/s: decoder e2e latency p99",
         "ours": decoder["e2e_p99_us"] / 1e3, "peer": None, "unit": "ms", "ratio": None,
         "target": None},
    ]
