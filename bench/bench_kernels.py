"""Kernels side by side with dv-processing and tonic on the same real events.

Numba compile time is excluded (every kernel runs once on a few events first); each timing is the
best of a few repeats. tonic's HATS runs on a subset of the 1000 N-MNIST samples and is scaled per
sample (the record name says how many). HOTS at the default graph's configuration has no library
peer; it is compared with the arithmetic limit of this core measured in the same run: one-thread
BLAS float32 products of the shapes its distances need, (events x 50) @ (50 x 64), as events/s.
"""

from __future__ import annotations

import pathlib

import dv_processing as dv
import numpy as np
import tonic
from threadpoolctl import threadpool_limits

from bench.common import RECORDINGS, best_of, record
from kernels.filters import background_activity, last_times
from kernels.hats import HatsState
from kernels.hots import ALL, SAME, hots_layer, hots_map, surface_dim
from kernels.timesurface import sae_new, sae_update
from pipeline.core.events import from_structured
from sensors.dv_events import from_dv

TONIC_SUBSET = 25
MODEL = pathlib.Path(__file__).resolve().parent.parent / "recordings" / "model.npz"  # config.toml's


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


def nmnist_stream(samples):
    """The N-MNIST samples back to back on one clock, 1 ms apart."""
    offset, parts = 0, []
    for events in samples:
        shifted = events.copy()
        shifted["t"] += offset
        offset = int(shifted["t"][-1]) + 1000
        parts.append(shifted)
    return np.concatenate(parts)


MATMUL_ROWS = 1 << 18  # events per product of the arithmetic limit (52 MB of float32 surfaces)


def bench_hots(samples):
    events = nmnist_stream(samples)
    t, x, y, p = events["t"], events["x"], events["y"], events["p"]
    out = np.empty(len(events), np.int16)

    # the default graph's layer (config.toml, recordings/model.npz): R=2, mode all, 2 channels,
    # tau 50 ms, 64 fixed prototypes of 50 values
    with np.load(MODEL) as model:
        protos = np.ascontiguousarray(model["hots_prototypes"], np.float64)
    dim, n_proto = protos.shape
    hits = np.ones(n_proto, np.int64)

    def default_run():
        surf, clock = hots_map(34, 34, 2, 2, ALL)
        hots_layer(t, x, y, p, surf, clock, 2, 50_000.0, ALL, protos, hits, False, out)

    surfaces = np.random.default_rng(1).random((MATMUL_ROWS, dim), np.float32)
    weights = protos.astype(np.float32)
    products = np.empty((MATMUL_ROWS, n_proto), np.float32)

    def matmul():
        np.matmul(surfaces, weights, out=products)

    with threadpool_limits(1, "blas"):  # one core, as the kernel
        ours = len(events) / best_of(default_run, 3)
        limit = MATMUL_ROWS / best_of(matmul, 3)
    out_rows = [record(f"HOTS default layer R=2 all N={n_proto} ({len(events)} N-MNIST events) "
                       f"vs arithmetic limit: float32 (events x {dim}) @ ({dim} x {n_proto}), "
                       f"1 BLAS thread", ours, limit, "events/s", 0.3)]

    radius, tau, n_proto = 2, 20_000.0, 16
    protos = np.random.default_rng(0).random((surface_dim(2, radius, SAME), n_proto)) * 0.5
    hits = np.ones(n_proto, np.int64)

    def ours_run():
        surf, clock = hots_map(34, 34, 2, radius, SAME)
        hots_layer(t, x, y, p, surf, clock, radius, tau, SAME, protos, hits, False, out)

    ours = len(events) / best_of(ours_run, 3)
    m = 20_000
    peer = m / best_of(lambda: reference_hots_python(t[:m], x[:m], y[:m], p[:m], 34, 34, radius,
                                                     tau, protos), 1)
    name = f"HOTS layer 1 R=2 N=16 inference ({len(events)} N-MNIST events)"
    return out_rows + [record(f"{name} vs per-event Python reference", ours, peer, "events/s",
                              None)]


def run() -> list[dict]:
    samples = nmnist()
    return bench_sae_and_denoise() + bench_hats(samples) + bench_hots(samples)
