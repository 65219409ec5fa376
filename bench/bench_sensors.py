"""Sensors (issue 3): decode throughput per format against the underlying or peer library called
directly in the same run, and replay pacing accuracy at x1 and x10.

Throughput is Mev/s of the best of 5 full decodes (numba compile excluded by a first run); ours
is the streaming path a replay uses (open the reader, iterate its chunks of canonical events).
Pacing replays jaer/dvs128_short.aedat (6.2 s of sensor time) at x1 and x10 and records the
largest |sensor time / speed - wall time| over its packets, as the release time of each packet
(ratio = 1 ms / drift; the issue asks for drift within 1 ms, so the target is 1).
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import RECORDINGS, best_of
from sensors.readers import open_reader, read_all
from sensors.replay import Replay



def stream(path, **options) -> None:
    for _ in open_reader(path, **options).chunks():
        pass


def throughput(name, events, ours, peer, target):
    mev = events / 1e6
    ours_rate, peer_rate = mev / best_of(ours), mev / best_of(peer)
    return dict(name=name, ours=ours_rate, peer=peer_rate, unit="Mev/s", ratio=ours_rate / peer_rate,
                target=target)


def dv_decode(path):
    import dv_processing as dv

    recording = dv.io.MonoCameraRecording(str(path))
    while (batch := recording.getNextEventBatch()) is not None:
        batch.numpy()


def faery_decode(path, **options):
    import faery

    for _ in faery.file_decoder.Decoder(path, **options):
        pass


def expelliarmus_decode(path, encoding):
    from expelliarmus import Wizard

    wizard = Wizard(encoding=encoding)
    wizard.set_file(str(path))
    wizard.read()


def decode_records() -> list[dict]:
    import tonic

    r = RECORDINGS
    aedat4, jaer = r / "aedat4/dvxplorer_sample.aedat4", r / "jaer/dvs128_short.aedat"
    evt2, evt3, dat = r / "prophesee/evt2_sample.raw", r / "prophesee/evt3_sample.raw", r / "prophesee/NCARS_obj_004397_td.dat"
    csv = r / "eventstream/dvs_disc.csv"
    gesture = r / "gesture/clip5.bin"
    count = {p: len(read_all(p)[1]) for p in (aedat4, jaer, evt2, evt3, dat, csv, gesture)}
    tonic_dtype = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
    return [
        throughput("aedat4 (validated) vs dv-processing", count[aedat4], lambda: stream(aedat4),
                   lambda: dv_decode(aedat4), 0.9),
        throughput("aedat4 (validate=0) vs dv-processing", count[aedat4],
                   lambda: stream(aedat4, validate=0), lambda: dv_decode(aedat4), 0.9),
        throughput("prophesee evt2 vs expelliarmus", count[evt2], lambda: stream(evt2),
                   lambda: expelliarmus_decode(evt2, "evt2"), 0.9),
        throughput("prophesee evt2 vs faery", count[evt2], lambda: stream(evt2),
                   lambda: faery_decode(evt2, dimensions_fallback=(640, 480)), 0.9),
        throughput("prophesee evt3 vs expelliarmus", count[evt3], lambda: stream(evt3),
                   lambda: expelliarmus_decode(evt3, "evt3"), 0.9),
        throughput("prophesee evt3 vs faery", count[evt3], lambda: stream(evt3),
                   lambda: faery_decode(evt3), 0.9),
        throughput("prophesee dat vs expelliarmus", count[dat], lambda: stream(dat),
                   lambda: expelliarmus_decode(dat, "dat"), 0.9),
        throughput("csv vs faery csv decoder", count[csv], lambda: stream(csv),
                   lambda: faery_decode(csv, dimensions_fallback=(320, 240)), 0.9),
        throughput("jaer aedat2 vs tonic generic AEDAT reader", count[jaer], lambda: stream(jaer),
                   lambda: tonic.io.get_aer_events_from_file(
                       str(jaer), *tonic.io.read_aedat_header_from_file(str(jaer))[:2]), 0.9),
        throughput("nmnist-layout .bin vs tonic read_mnist_file", count[gesture],
                   lambda: stream(gesture),
                   lambda: tonic.io.read_mnist_file(str(gesture), dtype=tonic_dtype), 0.9),
    ]


def pacing_drift_ms(speed: float) -> tuple[float, float]:
    """Largest and 99th-percentile |(t - t0) / speed - (wall - wall0)| (ms) over the packets of a
    paced replay."""
    replay = Replay("bench", RECORDINGS / "jaer/dvs128_short.aedat", speed=speed)
    anchor, drifts = None, []
    for packet in replay.packets():
        if not len(packet.records):
            continue
        now = time.perf_counter()
        if anchor is None:
            anchor = (now, packet.header.t_last)
            continue
        sensor_s = (packet.header.t_last - anchor[1]) / 1e6 / speed
        drifts.append(abs(sensor_s - (now - anchor[0])))
    return max(drifts) * 1e3, float(np.percentile(drifts, 99)) * 1e3


def run() -> list[dict]:
    records = decode_records()
    for speed in (1.0, 10.0):
        for label, drift in zip(("max", "p99"), pacing_drift_ms(speed)):
            records.append(dict(name=f"replay pacing {label} drift at x{speed:g} (dvs128_short)",
                                ours=drift, peer=1.0, unit="ms", ratio=1.0 / max(drift, 1e-6),
                                target=1.0))
    return records
