"""The camera graph's stages in-process at camera rates: how many input events per second they take.

The chain is the one of ``configs/camera.toml`` (scale of a 640 x 480 sensor onto 34 x 34 ->
denoise -> hots -> snn -> decoder, with its parameters and ``recordings/model.npz``), built and
warmed up as the runtime does and fed 1 ms packets of the synthetic sensor
(``sensors.synthetic``: 640 x 480, three moving discs and 5 % noise, as its source node cuts
them) at 1, 2 and 5 million events/s, each stage the packets its upstream returned (as
``run_chain`` does). Ours: input events per second of wall time, best of ``REPEATS`` runs,
each on fresh stages (per second of the thread's CPU time in ``ours_cpu``, a side note for a
shared machine).

No program runs this chain, so the peer is its measured limit in the same run: the same stages,
fresh, fed the same events as one packet, where the cost per packet vanishes and only the
kernels' cost per event remains. ratio = ours / limit (at most about 1). A second row per rate
states the goal, 2 million input events/s. Each row also carries the mean CPU time per 1 ms
packet of each stage (``<stage>_us``) and the events per packet each one received
(``<stage>_in``): at 5 Mev/s the scale stage gets 5,000 events a packet, the stages after it,
a few tens.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from bench.common import record
from pipeline.core.events import concat_records
from pipeline.core.packet import events_packet
from pipeline.runtime.config import load
from pipeline.runtime.worker import build_node
from sensors.synthetic import Scene, SyntheticSource

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "camera.toml"
STAGES = ("scale", "denoise", "hots", "snn", "decoder")
WIDTH, HEIGHT = 640, 480
RATES = (1e6, 2e6, 5e6)  # input events/s of the 640 x 480 sensor
DURATION_US = 1_000_000  # of sensor time per run
REPEATS = 3
GOAL = 2e6  # input events/s


def camera_packets(rate: float) -> list:
    """The synthetic sensor's 1 ms packets at ``rate`` events/s, for ``DURATION_US``."""
    source = SyntheticSource("camera", Scene(width=WIDTH, height=HEIGHT, rate=rate),
                             duration_us=DURATION_US, speed_factor=0.0, packet_us=1000)
    return list(source.packets())


def fresh_stages() -> list:
    """The camera graph's stages, built from its config and warmed up."""
    config = load(CONFIG)
    stages = [build_node(config.nodes[name]) for name in STAGES]
    for stage in stages:
        stage.warm_up()
    return stages


def run_packets(packets: list) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(CPU s, wall s, CPU ns per stage, input events per stage) of the chain on ``packets``,
    fresh stages."""
    stages = fresh_stages()
    per_stage, events_in = np.zeros(len(stages)), np.zeros(len(stages))
    wall, cpu = time.perf_counter(), time.thread_time_ns()
    for packet in packets:
        items = [packet]
        for k, stage in enumerate(stages):
            start = time.thread_time_ns()
            out = []
            for item in items:
                events_in[k] += len(item.records)
                out.extend(stage.process(item))
            per_stage[k] += time.thread_time_ns() - start
            items = out
    cpu, wall = (time.thread_time_ns() - cpu) / 1e9, time.perf_counter() - wall
    for stage in stages:
        stage.close()
    return cpu, wall, per_stage, events_in


def chain_rates(rate: float) -> dict:
    """Our best rates on 1 ms packets, the one-packet limit, and the per-stage figures."""
    packets = camera_packets(rate)
    n_events = sum(len(p.records) for p in packets)
    whole = [events_packet("camera", 0, concat_records([p.records for p in packets]), WIDTH,
                           HEIGHT)]
    ours, limit = [], []
    for _ in range(REPEATS):  # alternating, so both see the same load
        ours.append(run_packets(packets))
        limit.append(run_packets(whole))
    best = min(ours, key=lambda run: run[1])
    return {"events": n_events, "packets": len(packets), "ours": n_events / best[1],
            "ours_cpu": n_events / min(run[0] for run in ours),
            "limit": n_events / min(run[1] for run in limit),
            **{f"{name}_us": ns / len(packets) / 1e3 for name, ns in zip(STAGES, best[2])},
            **{f"{name}_in": n / len(packets) for name, n in zip(STAGES, best[3])}}


def run() -> list[dict]:
    out = []
    for rate in RATES:
        r = chain_rates(rate)
        extra = {key: value for key, value in r.items() if key not in ("ours", "limit")}
        label = f"{rate / 1e6:g} Mev/s"
        out.append({**record(f"chain: camera graph in-process, 1 ms packets at {label}, vs one "
                             f"packet", r["ours"], r["limit"], "events/s", None), **extra})
        out.append(dict(name=f"chain: camera graph in-process, 1 ms packets at {label}, goal",
                        ours=r["ours"], peer=None, unit="events/s", ratio=None, target=GOAL,
                        **extra))
    return out


if __name__ == "__main__":
    for row in run():
        print(row)
