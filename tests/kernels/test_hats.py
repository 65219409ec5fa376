"""HATS kernel vs a naive reference that follows Sironi et al. 2018, and vs tonic.

``reference_hats`` is written for clarity: one Python loop over events, each scanning its cell's
whole local memory with numpy. Its switches reproduce tonic ``ToAveragedTimesurface`` 1.7.0; with
them on it equals tonic, with them off (the paper) it equals our kernel, so the switches are
exactly the differences documented in docs/kernels.md.
"""

from __future__ import annotations

import dv_processing as dv
import numpy as np
import tonic

from kernels.hats import HatsState
from pipeline.core.events import from_structured
from sensors.dv_events import from_dv

PAPER = dict(per_polarity=False, with_self=False, same_time=False, float32=False)
TONIC = dict(per_polarity=True, with_self=True, same_time=True, float32=True)


def reference_hats(events, width, height, cell, rho, tau, window, per_polarity, with_self,
                   same_time, float32):
    """Naive HATS. Paper: one memory per cell, neighbours t_j in [t_i - window, t_i), both
    polarity channels, divided by the cell's event count. tonic: one memory per (cell, polarity)
    whose neighbours only land in that polarity's channel, t_j <= t_i (same-microsecond events
    count), +1 at the centre for the event itself, float32 times, divided by the count of that
    polarity in the cell."""
    n_cols, n_rows = -(-width // cell), -(-height // cell)
    side = 2 * rho + 1
    ftype = np.float32 if float32 else np.float64
    sums = np.zeros((n_cols * n_rows, 2, side, side), ftype)
    memory = {}
    counts = np.zeros((n_cols * n_rows, 2 if per_polarity else 1))
    for t, x, y, p in events[["t", "x", "y", "p"]].tolist():
        c = (y // cell) * n_cols + x // cell
        key = (c, p) if per_polarity else c
        past = np.array(memory.get(key, []), dtype=np.int64).reshape(-1, 4)
        tj = past[:, 0].astype(ftype)
        ti = ftype(t)
        dx, dy = past[:, 1] - x, past[:, 2] - y
        close = (np.abs(dx) <= rho) & (np.abs(dy) <= rho) & (tj >= ti - ftype(window))
        close &= (tj <= ti) if same_time else (tj < ti)
        np.add.at(sums[c], (past[close, 3], dy[close] + rho, dx[close] + rho),
                  np.exp(-(ti - tj[close]) / ftype(tau)))
        if with_self:
            sums[c, p, rho, rho] += 1
        memory.setdefault(key, []).append((t, x, y, p))
        counts[c, p if per_polarity else 0] += 1
    return sums / np.maximum(counts, 1)[:, :, None, None]


def nmnist(recordings, n, step=50):
    files = sorted((recordings / "nmnist" / "Train").glob("*/*.bin"))[::step][:n]
    return [from_structured(tonic.io.read_mnist_file(str(f), dtype=tonic.datasets.NMNIST.dtype))
            for f in files]


def ours(events, width, height, cell=10, rho=3, tau=20_000.0, window=100_000, capacity=64):
    state = HatsState(width, height, cell, rho, tau, window, capacity)
    state.update(events)
    return state.histogram()


def test_hats_equals_paper_reference_on_nmnist(recordings):
    for events in nmnist(recordings, 4):
        expected = reference_hats(events, 34, 34, 10, 3, 20_000.0, 100_000, **PAPER)
        np.testing.assert_allclose(ours(events, 34, 34), expected, rtol=1e-6, atol=1e-9)
        assert expected.max() > 0.1


def test_hats_streams_and_grows_exactly(recordings):
    events = nmnist(recordings, 1)[0]
    whole = ours(events, 34, 34)
    state = HatsState(34, 34, 10, 3, 20_000.0, 100_000, capacity=1)  # forces ring growth
    readings = []
    for chunk in np.array_split(events, 13):
        state.update(chunk)
        readings.append(state.histogram())  # readable at any moment
    assert state.capacity > 64
    np.testing.assert_array_equal(readings[-1], whole)
    assert not np.array_equal(readings[5], whole)


def test_same_microsecond_events_and_long_gaps_across_packets(recordings):
    # timestamps coarsened to 1 ms: runs of same-time events, which never see each other, cut by
    # packet borders; then a second sample 30 s later (past the 500 tau rescaling)
    first, second = nmnist(recordings, 2, step=400)
    second = second.copy()
    second["t"] += first["t"][-1] + 30_000_000
    events = np.concatenate([first, second])
    events["t"] = events["t"] // 1000 * 1000
    expected = reference_hats(events, 34, 34, 10, 3, 20_000.0, 100_000, **PAPER)
    state = HatsState(34, 34, 10, 3, 20_000.0, 100_000, capacity=8)
    for chunk in np.array_split(events, 41):
        state.update(chunk)
    np.testing.assert_allclose(state.histogram(), expected, rtol=1e-6, atol=1e-9)
    assert (np.diff(events["t"]) == 0).mean() > 0.5


def test_hats_equals_paper_reference_on_dvxplorer_and_ncars(recordings):
    recording = dv.io.MonoCameraRecording(str(recordings / "aedat4" / "dvxplorer_sample.aedat4"))
    dvx = np.concatenate([from_dv(recording.getNextEventBatch()) for _ in range(6)])[:12_000]
    ncars = from_structured(np.load(recordings / "prophesee" / "dat_sample.npy"))
    for events, width, height in ((dvx, 320, 240), (ncars, 64, 64)):
        params = dict(cell=16, rho=3, tau=5_000.0, window=20_000)
        expected = reference_hats(events, width, height, **params, **PAPER)
        np.testing.assert_allclose(ours(events, width, height, **params), expected,
                                   rtol=1e-6, atol=1e-9)
        assert (expected > 0).sum() > 100


def test_reference_with_tonic_switches_equals_tonic_and_paper_differs(recordings):
    transform = tonic.transforms.ToAveragedTimesurface(
        sensor_size=(34, 34, 2), cell_size=10, surface_size=7, time_window=100_000, tau=20_000,
        decay="exp")
    for events in nmnist(recordings, 3, step=300):
        structured = np.zeros(len(events), dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
        for name in "txyp":
            structured[name] = events[name]
        theirs = transform(structured)
        as_tonic = reference_hats(events, 34, 34, 10, 3, 20_000.0, 100_000, **TONIC)
        np.testing.assert_allclose(as_tonic, theirs, rtol=2e-5, atol=1e-6)
        # the paper's histogram is not tonic's: every switch above changes it
        paper = ours(events, 34, 34)
        assert np.abs(paper - theirs).max() > 0.5
