"""HOTS layer vs a per-event reference that follows Lagorce et al. 2017 literally."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import tonic

from kernels.hots import (
    ALL,
    MERGE,
    SAME,
    hots_layer,
    hots_map,
    hots_records,
    screening_tables,
    surface_dim,
)
from pipeline.core.events import FEATURE_DTYPE, from_structured
from tests.conftest import ROOT


def reference_surface(last, t, x, y, c, radius, tau, mode):
    """S(u, c) = exp(-(t - last[c, y+v, x+u]) / tau); never-fired and off-sensor pixels give 0."""
    channels = range(last.shape[0]) if mode == ALL else [0 if mode == MERGE else c]
    values = []
    for cc in channels:
        for v in range(-radius, radius + 1):
            for u in range(-radius, radius + 1):
                yy, xx = y + v, x + u
                inside = 0 <= yy < last.shape[1] and 0 <= xx < last.shape[2]
                seen = inside and last[cc, yy, xx] is not None
                values.append(math.exp(-(t - last[cc, yy, xx]) / tau) if seen else 0.0)
    return np.array(values)


def reference_hots(events, width, height, channels, radius, tau, mode, protos, learn):
    """One event at a time: update memory, build S, nearest prototype, paper's online update."""
    last = np.full((channels if mode != MERGE else 1, height, width), None, dtype=object)
    protos = [None if p is None else p.copy() for p in protos]
    hits = [0 if p is None else 1 for p in protos]
    out, distances = [], []
    for t, x, y, c in events.tolist():
        last[0 if mode == MERGE else c, y, x] = t
        s = reference_surface(last, t, x, y, c, radius, tau, mode)
        if learn and any(p is None for p in protos):
            k = next(j for j, p in enumerate(protos) if p is None)
            protos[k], hits[k] = s.copy(), 1
            distances.append(None)
        else:
            d = np.array([np.sum((p - s) ** 2) for p in protos])
            k = int(np.argmin(d))
            distances.append(d)
            if learn:
                beta = protos[k] @ s / (np.linalg.norm(protos[k]) * np.linalg.norm(s))
                alpha = 0.01 / (1 + hits[k] / 20000)
                protos[k] = protos[k] + alpha * (s - beta * protos[k])
                hits[k] += 1
        out.append(k)
    return np.array(out), np.array(protos), distances


def nmnist_sample(recordings, index):
    path = sorted((recordings / "nmnist" / "Train").glob("*/*.bin"))[index]
    return from_structured(tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype))


def run_kernel(events, width, height, channels, radius, tau, mode, protos, hits, learn, chunks=1):
    surf, clock = hots_map(width, height, channels, radius, mode)
    out = np.empty(len(events), np.int16)
    bounds = np.linspace(0, len(events), chunks + 1).astype(int)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        ev = events[lo:hi]
        hots_layer(ev["t"], ev["x"], ev["y"], ev["p"], surf, clock, radius, tau, mode,
                   protos, hits, learn, out[lo:hi])
    return out


def assert_same_winners(ours, expected, distances):
    """Equal winners, except at exact near-ties of the reference distances (rounding order)."""
    for i in np.nonzero(ours != expected)[0]:
        d = distances[i]
        assert d is not None and abs(d[ours[i]] - d[expected[i]]) <= 1e-9 * max(1.0, d.max()), i
    assert (ours == expected).mean() > 0.999


@pytest.mark.parametrize("mode", [SAME, ALL, MERGE])
def test_learning_layer_equals_reference_on_nmnist(recordings, mode):
    events = nmnist_sample(recordings, 123)[:1500]
    radius, tau, n = 2, 20_000.0, 8
    dim = surface_dim(2, radius, mode)
    protos, hits = np.zeros((dim, n)), np.zeros(n, np.int64)
    ours = run_kernel(events, 34, 34, 2, radius, tau, mode, protos, hits, True, chunks=3)
    expected, expected_protos, distances = reference_hots(
        events[["t", "x", "y", "p"]], 34, 34, 2, radius, tau, mode, [None] * n, True)
    assert_same_winners(ours, expected, distances)
    np.testing.assert_allclose(protos.T, expected_protos, rtol=1e-9, atol=1e-12)
    assert len(np.unique(ours)) > n // 2
    assert hits.sum() == len(events) and np.array_equal(hits, np.bincount(ours, minlength=n))


@pytest.mark.parametrize("mode", [SAME, ALL, MERGE])
def test_fixed_prototypes_equal_reference_with_time_gaps_and_borders(recordings, mode):
    # two samples back to back, 40 s apart: forces the map rescaling (500 tau) in between; three
    # calls whose borders fall inside the kernel's blocks of events
    first, second = nmnist_sample(recordings, 7)[:800], nmnist_sample(recordings, 901)[:800]
    second = second.copy()
    second["t"] += first["t"][-1] + 40_000_000
    events = np.concatenate([first, second])
    radius, tau, n = 3, 50_000.0, 16
    rng = np.random.default_rng(4)
    protos = rng.random((surface_dim(2, radius, mode), n)) * 0.3
    hits = np.ones(n, np.int64)
    before = protos.copy()
    ours = run_kernel(events, 34, 34, 2, radius, tau, mode, protos, hits, False, chunks=3)
    expected, _, distances = reference_hots(
        events[["t", "x", "y", "p"]], 34, 34, 2, radius, tau, mode, list(before.T), False)
    assert_same_winners(ours, expected, distances)
    np.testing.assert_array_equal(protos, before)  # no learning: prototypes untouched
    border = (events["x"] < radius) | (events["y"] < radius) | (events["x"] >= 34 - radius)
    assert border.any()


def test_first_surface_is_only_the_event_itself():
    # memory starts at minus infinity: a lone event sees 1 at its centre and 0 elsewhere,
    # also at the sensor corner where the neighbourhood leaves the sensor (no mirroring)
    events = np.zeros(1, dtype=[("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])
    radius, n = 2, 1
    protos, hits = np.zeros((surface_dim(2, radius, SAME), n)), np.zeros(n, np.int64)
    run_kernel(events, 5, 5, 2, radius, 1000.0, SAME, protos, hits, True)
    expected = np.zeros((5, 5))
    expected[2, 2] = 1.0
    np.testing.assert_array_equal(protos[:, 0].reshape(5, 5), expected)


def model_prototypes():
    """The default graph's 64 prototypes (config.toml: radius 2, mode "all", 2 channels)."""
    path = ROOT / "recordings" / "model.npz"
    with np.load(path) as archive:
        return np.ascontiguousarray(archive["hots_prototypes"], dtype=np.float64)


def nmnist_stream(recordings, indices):
    """N-MNIST samples back to back, 1 ms apart, on one clock."""
    parts, offset = [], 0
    for index in indices:
        events = nmnist_sample(recordings, index).copy()
        events["t"] += offset
        offset = int(events["t"][-1]) + 1000
        parts.append(events)
    return np.concatenate(parts)


def test_default_configuration_equals_float64_reference_on_nmnist(recordings):
    # the default graph's layer (radius 2, mode "all", tau 50 ms, the model's 64 prototypes, no
    # learning); the kernel screens distances in float32, so every winner is checked against the
    # float64 reference, over calls cut inside the kernel's blocks of events
    events = nmnist_stream(recordings, [3, 250, 611])
    protos = model_prototypes()
    radius, tau = 2, 50_000.0
    ours = run_kernel(events, 34, 34, 2, radius, tau, ALL, protos, np.ones(64, np.int64), False,
                      chunks=7)
    expected, _, distances = reference_hots(
        events[["t", "x", "y", "p"]], 34, 34, 2, radius, tau, ALL, list(protos.T), False)
    assert_same_winners(ours, expected, distances)
    assert len(np.unique(ours)) > 32


def test_prototypes_closer_than_float32_resolves_are_told_apart_as_in_float64(recordings):
    # 7 extra prototypes equal to model prototypes up to a relative 1e-6: float32 cannot rank a
    # surface between the two of a pair (its rounding is larger), float64 can. The events whose
    # float32 lead is within the rounding bound are decided in float64, so the winners are still
    # the reference's; 71 prototypes also exercise the padding of the prototype tiles
    events = nmnist_stream(recordings, [42, 517])
    model = model_prototypes()
    counts = np.bincount(run_kernel(events, 34, 34, 2, 2, 50_000.0, ALL, model,
                                    np.ones(64, np.int64), False), minlength=64)
    twins = np.argsort(counts)[::-1][:7]  # the most used ones: many events near a pair
    protos = np.concatenate([model, model[:, twins] * (1.0 + 1e-6)], axis=1)
    ours = run_kernel(events, 34, 34, 2, 2, 50_000.0, ALL, protos, np.ones(71, np.int64), False,
                      chunks=3)
    expected, _, distances = reference_hots(
        events[["t", "x", "y", "p"]], 34, 34, 2, 2, 50_000.0, ALL, list(protos.T), False)
    assert_same_winners(ours, expected, distances)
    assert (ours >= 64).any() and np.isin(ours, twins).any()  # both sides of the pairs win


@pytest.mark.parametrize("learn", [False, True])
def test_records_entry_equals_hots_layer(recordings, learn):
    """``hots_records`` (the stage's entry: structured records in and out, the prototypes'
    tables computed once) gives the winners and prototypes of one ``hots_layer`` call over the
    whole stream, fed packet by packet, on camera events (p) and on feature events (f); packets
    of 1 to 3 events are decided by the float64 distances alone, larger ones screened."""
    events = nmnist_stream(recordings, [7, 300])
    features = np.zeros(len(events), FEATURE_DTYPE)
    for name in ("t", "x", "y"):
        features[name] = events[name]
    features["f"] = events["p"]
    rng = np.random.default_rng(1)
    starts = np.sort(rng.choice(len(events), 400, replace=False))
    bounds = np.unique(np.concatenate([[0, len(events)], starts, starts + rng.integers(1, 4, 400)]))
    assert {1, 2, 3} <= set(np.diff(bounds).tolist()) and np.diff(bounds).max() > 64
    for records, channel in ((events, "p"), (features, "f")):
        protos = np.zeros((surface_dim(2, 2, ALL), 16)) if learn else model_prototypes()[:, :16]
        theirs, hits = protos.copy(), np.zeros(16, np.int64) + (not learn)
        mine, mine_hits = protos.copy(), hits.copy()
        want = np.empty(len(records), np.int16)
        hots_layer(records["t"], records["x"], records["y"], records[channel],
                   *hots_map(34, 34, 2, 2, ALL), 2, 50_000.0, ALL, theirs, hits, learn, want)
        tables = screening_tables(mine)
        memory = hots_map(34, 34, 2, 2, ALL)
        got = np.empty(len(records), FEATURE_DTYPE)
        for lo, hi in itertools.pairwise(bounds):
            hots_records(records[lo:hi], *memory, 2, 50_000.0, ALL, mine, mine_hits, learn,
                         *tables, got[lo:hi])
        np.testing.assert_array_equal(got["f"], want)
        assert got[["t", "x", "y"]].tolist() == records[["t", "x", "y"]].tolist()
        np.testing.assert_array_equal(mine, theirs)
        np.testing.assert_array_equal(mine_hits, hits)
