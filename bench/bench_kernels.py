"""Kernels side by side with dv-processing and tonic on the same real events.

Numba compile time is excluded (every kernel runs once on a few events first); each timing is the
best of a few repeats. tonic's HATS runs on a subset of the 1000 N-MNIST samples and is scaled per
sample (the record name says how many).
"""

from __future__ import annotations

import dv_processing as dv
import numpy as np
import tonic

from bench.common import RECORDINGS, best_of, record
from kernels.filters import background_activity, last_times
from kernels.hats import HatsState
from kernels.hots import SAME, hots_layer, hots_map, surface_dim
from kernels.timesurface import sae_new, sae_update
from pipeline.core.events import from_structured
from sensors.dv_events import from_dv

TONIC_SUBSET = 25


def dvxplorer():
    recording = dv.io.MonoCameraRecording(str(RECORDINGS / "aedat4" / "dvxplorer_sample.aedat4"))
    batches = []
    while (batch := recording.getNextEventBatch()) is not None:
        batches.append(batch)
    events = np.concatenate([from_dv(b) for b in batches])
    return recording.getEventResolution(), batches, events


def nmnist():
    files = sorted((RECORDINGS / "nmnist" / "Train").glob("*/*.bin"))
    return [from_structured(tonic.io.read_mnist_file(str(f), dtype=tonic.datasets.NMNIST.dtype))
            for f in files]


def bench_sae_and_denoise():
    (width, height), batches, events = dvxplorer()
    n = len(events)
    t, x, y, p = events["t"], events["x"], events["y"], events["p"]
    sae = sae_new(width, height, 1)
    sae_update(sae, t[:10], x[:10], y[:10], p[:10], True)
    surface = dv.TimeSurface(height, width)

    def dv_accept():
        for batch in batches:
            surface.accept(batch)

    ours = n / best_of(lambda: sae_update(sae, t, x, y, p, True))
    peer = n / best_of(dv_accept)
    out = [record("SAE update vs dv TimeSurface.accept (DVXplorer)", ours, peer, "events/s", 1.0)]

    keep = np.empty(n, bool)
    background_activity(t[:10], x[:10], y[:10], last_times(width, height, True), 2000, keep[:10])

    def dv_filter():
        f = dv.noise.BackgroundActivityNoiseFilter((width, height))
        for batch in batches:
            f.accept(batch)
            f.generateEvents()

    ours = n / best_of(lambda: background_activity(t, x, y, last_times(width, height, True),
                                                   2000, keep))
    peer = n / best_of(dv_filter)
    out.append(record("background activity vs dv BackgroundActivityNoiseFilter", ours, peer,
                      "events/s", 1.0))
    return out


def bench_hats(samples):
    params = dict(cell=10, rho=3, tau=20_000.0, window=100_000)
    state = HatsState(34, 34, **params)
    state.update(samples[0][:10])

    def ours_all():
        for events in samples:
            state.reset()  # keeps the ring capacity already grown
            state.update(events)
            state.histogram()

    transform = tonic.transforms.ToAveragedTimesurface(
        sensor_size=(34, 34, 2), cell_size=10, surface_size=7, time_window=100_000, tau=20_000)
    subset = []
    for events in samples[:: len(samples) // TONIC_SUBSET][:TONIC_SUBSET]:
        structured = np.zeros(len(events), dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
        for name in "txyp":
            structured[name] = events[name]
        subset.append(structured)

    def tonic_subset():
        for structured in subset:
            transform(structured)

    ours = len(samples) / best_of(ours_all, 3)
    peer = len(subset) / best_of(tonic_subset, 1)
    return [record(f"HATS {len(samples)} N-MNIST vs tonic ToAveragedTimesurface "
                   f"(tonic on {len(subset)}, per sample)", ours, peer, "samples/s", 300.0)]


def reference_hots_python(t, x, y, p, width, height, radius, tau, protos):
    """The per-event Python version: SAE lookups, math.exp per pixel, numpy nearest prototype."""
    import math

    last = np.full((2, height, width), -np.inf)
    side = 2 * radius + 1
    surface = np.empty(side * side)
    out = np.empty(len(t), np.int64)
    for i, (ti, xi, yi, pi) in enumerate(zip(t.tolist(), x.tolist(), y.tolist(), p.tolist())):
        last[pi, yi, xi] = ti
        k = 0
        for v in range(-radius, radius + 1):
            for u in range(-radius, radius + 1):
                inside = 0 <= yi + v < height and 0 <= xi + u < width
                surface[k] = math.exp(-(ti - last[pi, yi + v, xi + u]) / tau) if inside else 0.0
                k += 1
        out[i] = np.argmin(((protos - surface[:, None]) ** 2).sum(axis=0))
    return out


def bench_hots(samples):
    offset, parts = 0, []
    for events in samples:
        shifted = events.copy()
        shifted["t"] += offset
        offset = int(shifted["t"][-1]) + 1000
        parts.append(shifted)
    events = np.concatenate(parts)
    t, x, y, p = events["t"], events["x"], events["y"], events["p"]
    radius, tau, n_proto = 2, 20_000.0, 16
    protos = np.random.default_rng(0).random((surface_dim(2, radius, SAME), n_proto)) * 0.5
    hits = np.ones(n_proto, np.int64)
    out = np.empty(len(events), np.int16)

    def ours_run():
        surf, clock = hots_map(34, 34, 2, radius, SAME)
        hots_layer(t, x, y, p, surf, clock, radius, tau, SAME, protos, hits, False, out)

    ours_run()
    ours = len(events) / best_of(ours_run, 3)
    m = 20_000
    peer = m / best_of(lambda: reference_hots_python(t[:m], x[:m], y[:m], p[:m], 34, 34, radius,
                                                     tau, protos), 1)
    name = f"HOTS layer 1 R=2 N=16 inference ({len(events)} N-MNIST events)"
    return [record(f"{name} vs issue goal 1e7", ours, 1e7, "events/s", 1.0),
            record(f"{name} vs per-event Python reference", ours, peer, "events/s", None)]


def run() -> list[dict]:
    samples = nmnist()
    return bench_sae_and_denoise() + bench_hats(samples) + bench_hots(samples)
