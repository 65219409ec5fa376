"""Sinks and viewer: event-frame throughput against dv-processing, same events, same run.

Work measured: turning 1 ms packets into display frames, one frame per 33 ms of sensor time (the
viewer's 30 fps). Ours: ``kernels.frames.accumulate`` per packet (decaying ON/OFF counts plus the
per-pixel last time for the time surface) and ``render`` to RGB per frame. Peers, fed dv
``EventStore`` packets made beforehand (conversion excluded): ``dv.Accumulator`` (exponential
decay, ``accept`` per packet, ``generateFrame`` per frame) and ``visualization.EventVisualizer``
(``generateImage`` of each frame's events: no decay, so less work than ours). Events/s over the
whole input, best of 5, numba compile excluded.

Inputs: the DVXplorer recording (111,954 events over 0.59 s, 320x240) and 0.2 s of the synthetic
scene at 10 Mev/s (2 M events; about 333 k events per frame).
"""

from __future__ import annotations

import numpy as np

from bench.common import RECORDINGS, best_of, record
from kernels import frames as kf
from pipeline.core.events import concat_records
from pipeline.core.packet import Packetizer
from pipeline.ui.viewer import BACKGROUND, OFF_COLOUR, ON_COLOUR
from sensors.dv_events import to_dv
from sensors.readers import read_all
from sensors.synthetic import Scene, scene_events

FRAME_US = 33_333
TAU_US = 30_000.0


def frames_of(packets: list[np.ndarray]) -> list[list[int]]:
    """Packet indices grouped by the 33 ms frame their last event falls in."""
    groups: dict[int, list[int]] = {}
    for i, packet in enumerate(packets):
        groups.setdefault(int(packet["t"][-1]) // FRAME_US, []).append(i)
    return list(groups.values())


def ours(packets, groups, width, height) -> None:
    acc, t0 = kf.frame_new(width, height)
    last = np.zeros((height, width), np.int64)
    t0[0] = packets[0]["t"][0]
    rgb = np.empty((height, width, 3), np.uint8)
    for group in groups:
        for i in group:
            p = packets[i]
            kf.accumulate(acc, t0, last, p["t"], p["x"], p["y"], p["p"], TAU_US)
        kf.render(acc, kf.decay_scale(t0, packets[group[-1]]["t"][-1], TAU_US), BACKGROUND,
                  ON_COLOUR, OFF_COLOUR, rgb)


def dv_accumulator(stores, groups, width, height) -> None:
    import dv_processing as dv

    acc = dv.Accumulator((width, height), dv.Accumulator.Decay.EXPONENTIAL, TAU_US / 1e6, False,
                         0.15, 1.0, 0.5, 0.0, False)
    for group in groups:
        for i in group:
            acc.accept(stores[i])
        acc.generateFrame()


def dv_visualizer(frame_stores, width, height) -> None:
    import dv_processing as dv

    visualizer = dv.visualization.EventVisualizer((width, height))
    for store in frame_stores:
        visualizer.generateImage(store)


def compare(name: str, events: np.ndarray, width: int, height: int) -> list[dict]:
    packetizer = Packetizer(max_us=1000)
    packets = packetizer.push(events) + packetizer.flush()
    groups = frames_of(packets)
    stores = [to_dv(p) for p in packets]
    frame_stores = [to_dv(concat_records([packets[i] for i in g])) for g in groups]
    n = len(events)
    ours_rate = n / best_of(lambda: ours(packets, groups, width, height))
    records = []
    for peer, fn in (("dv Accumulator", lambda: dv_accumulator(stores, groups, width, height)),
                     ("dv EventVisualizer", lambda: dv_visualizer(frame_stores, width, height))):
        peer_rate = n / best_of(fn)
        records.append(record(f"viewer frames, {name} vs {peer}", ours_rate, peer_rate, "events/s", 1.0))
    return records


def run() -> list[dict]:
    reader, events = read_all(RECORDINGS / "aedat4" / "dvxplorer_sample.aedat4")
    results = compare("DVXplorer 112k events", events, reader.width, reader.height)
    scene = Scene(rate=10e6)
    synthetic = concat_records(scene_events(scene, 200_000))
    results += compare("synthetic 10 Mev/s", synthetic, scene.width, scene.height)
    return results
