"""SAE and sampled exponential surface vs a per-event reference, dv-processing and tonic."""

from __future__ import annotations

import dv_processing as dv
import numpy as np
import pytest
import tonic
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.timesurface import NEVER, sae_new, sae_update, sample_surface
from pipeline.core.events import from_structured
from sensors.dv_events import from_dv


def dv_batches(path):
    """The event batches of an AEDAT4 file as dv-processing reads them."""
    recording = dv.io.MonoCameraRecording(str(path))
    batches = []
    while (batch := recording.getNextEventBatch()) is not None:
        batches.append(batch)
    return recording.getEventResolution(), batches


def reference_sae(events, width, height, merge):
    """One Python assignment per event: the obviously-correct SAE."""
    sae = {}
    for t, x, y, p in events[["t", "x", "y", "p"]].tolist():
        sae[(0 if merge else p, y, x)] = t
    out = np.full((1 if merge else 2, height, width), NEVER, np.int64)
    for key, t in sae.items():
        out[key] = t
    return out


@pytest.mark.parametrize("merge", [True, False])
def test_sae_equals_reference_on_nmnist(recordings, merge):
    events = from_structured(tonic.io.read_mnist_file(
        str(sorted((recordings / "nmnist" / "Train").glob("3*/*.bin"))[0]), dtype=tonic.datasets.NMNIST.dtype))
    sae = sae_new(34, 34, 1 if merge else 2)
    for chunk in np.array_split(events, 7):  # streaming: packets give the same map
        sae_update(sae, chunk["t"], chunk["x"], chunk["y"], chunk["p"], merge)
    np.testing.assert_array_equal(sae, reference_sae(events, 34, 34, merge))
    assert (sae == NEVER).any() and (sae != NEVER).any()


def test_sae_equals_dv_timesurface_on_dvxplorer(recordings):
    (width, height), batches = dv_batches(recordings / "aedat4" / "dvxplorer_sample.aedat4")
    surface = dv.TimeSurface(height, width)
    sae = sae_new(width, height, 1)
    for batch in batches:
        surface.accept(batch)
        events = from_dv(batch)
        sae_update(sae, events["t"], events["x"], events["y"], events["p"], True)
    theirs = np.array([[surface.at(y, x) for x in range(width)] for y in range(height)])
    # dv-processing starts its map at 0 where we start at NEVER (minus infinity)
    np.testing.assert_array_equal(np.where(sae[0] == NEVER, 0, sae[0]), theirs)
    assert (theirs > 0).sum() > 10_000


def test_sae_equals_dv_timesurface_on_prophesee(recordings):
    events = from_structured(np.load(recordings / "prophesee" / "evt3_sample.npy"))
    width, height = 1280, 720
    surface = dv.TimeSurface(height, width)
    store = dv.EventStore()
    for t, x, y, p in events[["t", "x", "y", "p"]].tolist():
        store.push_back(t, x, y, bool(p))
    surface.accept(store)
    sae = sae_new(width, height, 1)
    sae_update(sae, events["t"], events["x"], events["y"], events["p"], True)
    ys, xs = np.nonzero(sae[0] != NEVER)
    theirs = np.array([surface.at(y, x) for y, x in zip(ys.tolist(), xs.tolist())])
    np.testing.assert_array_equal(sae[0, ys, xs], theirs)
    # and pixels we never saw are still 0 for dv (a sample of them: at() is one Python call each)
    rng = np.random.default_rng(0)
    empty = np.argwhere(sae[0] == NEVER)[rng.choice(int((sae[0] == NEVER).sum()), 2000)]
    assert all(surface.at(int(y), int(x)) == 0 for y, x in empty)


@pytest.mark.parametrize("source", ["nmnist", "dvxplorer"])
def test_sampled_surface_equals_tonic_to_timesurface(recordings, source):
    if source == "nmnist":
        path = sorted((recordings / "nmnist" / "Train").glob("7*/*.bin"))[3]
        events = from_structured(tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype))
        width, height, dt, tau = 34, 34, 20_000, 30_000.0
    else:
        (width, height), batches = dv_batches(recordings / "aedat4" / "dvxplorer_sample.aedat4")
        events = np.concatenate([from_dv(b) for b in batches])
        dt, tau = 50_000, 10_000.0
    tonic_events = np.zeros(len(events), dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
    for name in "txyp":
        tonic_events[name] = events[name]
    theirs = tonic.transforms.ToTimesurface(sensor_size=(width, height, 2), dt=dt, tau=tau)(tonic_events)

    # our own slicing: slice i holds t < t0 + (i + 1) dt and is sampled at that end time
    sae, out = sae_new(width, height, 2), np.empty((2, height, width))
    t0, done, ours = int(events["t"][0]), 0, []
    for i in range(len(theirs)):
        end = t0 + (i + 1) * dt
        stop = int(np.searchsorted(events["t"], end))
        chunk = events[done:stop]
        sae_update(sae, chunk["t"], chunk["x"], chunk["y"], chunk["p"], False)
        sample_surface(sae, end, tau, out)
        ours.append(out.copy())
        done = stop
    np.testing.assert_allclose(np.array(ours), theirs, rtol=1e-12, atol=0)
    assert (theirs > 0.5).any()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 4), st.integers(0, 1),
                          st.integers(0, 5000)), min_size=1, max_size=50),
       st.floats(10.0, 1e5))
def test_sample_surface_is_exp_of_age(raw, tau):
    events = np.zeros(len(raw), dtype=[("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])
    events["x"], events["y"], events["p"], events["t"] = np.array(raw).T
    events.sort(order="t", kind="stable")
    sae = sae_new(8, 5, 2)
    sae_update(sae, events["t"], events["x"], events["y"], events["p"], False)
    now = int(events["t"][-1]) + 17
    out = np.empty(sae.shape)
    sample_surface(sae, now, tau, out)
    expected = np.where(sae == NEVER, 0.0, np.exp(-(now - sae.astype(float)) / tau))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=0)
    assert ((out > 0) == (sae != NEVER)).all()
