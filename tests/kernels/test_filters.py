"""Filters vs dv-processing (background activity, ROI, mask) and per-event Python references."""

from __future__ import annotations

import datetime

import dv_processing as dv
import numpy as np
import pytest
import tonic

from kernels.filters import (
    background_activity,
    background_activity_records,
    count_events,
    last_times,
    pixel_mask,
    refractory,
)
from kernels.timesurface import NEVER
from pipeline.core.events import from_structured
from sensors.dv_events import from_dv, to_dv


def dvxplorer(recordings):
    """(width, height), the dv-processing batches and our events of the DVXplorer recording."""
    recording = dv.io.MonoCameraRecording(str(recordings / "aedat4" / "dvxplorer_sample.aedat4"))
    batches = []
    while (batch := recording.getNextEventBatch()) is not None:
        batches.append(batch)
    return recording.getEventResolution(), batches, np.concatenate([from_dv(b) for b in batches])


def reference_background_activity(events, width, height, duration, start):
    """Per event: any of the 8 neighbours fired less than ``duration`` us ago? Then remember t."""
    last = {}
    keep = []
    for t, x, y in events[["t", "x", "y"]].tolist():
        neighbours = [(x + dx, y + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)
                      if (dx or dy) and 0 <= x + dx < width and 0 <= y + dy < height]
        keep.append(any(t - last.get(n, start) < duration for n in neighbours))
        last[(x, y)] = t
    return np.array(keep)


@pytest.mark.parametrize("duration", [2000, 500])
def test_background_activity_keeps_what_dv_keeps_on_dvxplorer(recordings, duration):
    (width, height), batches, events = dvxplorer(recordings)
    dv_filter = dv.noise.BackgroundActivityNoiseFilter(
        (width, height), datetime.timedelta(microseconds=duration))
    last = last_times(width, height, dv_compatible=True)
    theirs, ours = [], []
    for batch in batches:  # packet by packet on both sides
        dv_filter.accept(batch)
        theirs.append(from_dv(dv_filter.generateEvents()).copy())
        chunk = from_dv(batch)
        keep = np.empty(len(chunk), bool)
        n = background_activity(chunk["t"], chunk["x"], chunk["y"], last, duration, keep)
        assert n == keep.sum()
        ours.append(chunk[keep])
    theirs, ours = np.concatenate(theirs), np.concatenate(ours)
    np.testing.assert_array_equal(ours, theirs)
    assert 0.05 * len(events) < len(ours) < 0.95 * len(events)


def test_background_activity_keeps_what_dv_keeps_on_prophesee(recordings):
    events = from_structured(np.load(recordings / "prophesee" / "evt3_test_pedestrians.npy"))
    dv_filter = dv.noise.BackgroundActivityNoiseFilter((1280, 720))
    dv_filter.accept(to_dv(events))
    theirs = from_dv(dv_filter.generateEvents())
    keep = np.empty(len(events), bool)
    background_activity(events["t"], events["x"], events["y"], last_times(1280, 720, True), 2000, keep)
    np.testing.assert_array_equal(events[keep], theirs)
    assert 0 < keep.sum() < len(events)


@pytest.mark.parametrize("dv_compatible", [True, False])
def test_background_activity_equals_reference_on_nmnist(recordings, dv_compatible):
    # N-MNIST starts near t = 0: here the memory start value (0 or minus infinity) matters
    path = sorted((recordings / "nmnist" / "Train").glob("5*/*.bin"))[2]
    events = from_structured(tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype))
    start = 0 if dv_compatible else NEVER
    duration = int(events["t"][20]) + 1  # us: the first 21 events fall inside it
    keep = np.empty(len(events), bool)
    background_activity(events["t"], events["x"], events["y"],
                        last_times(34, 34, dv_compatible), duration, keep)
    np.testing.assert_array_equal(keep, reference_background_activity(events, 34, 34, duration, start))
    out, last, kept = np.empty(len(events), events.dtype), last_times(34, 34, dv_compatible), []
    for chunk in np.array_split(events, 37):  # the stage's entry, on records, packet by packet
        kept.append(out[:background_activity_records(chunk, last, duration, out)].copy())
    np.testing.assert_array_equal(np.concatenate(kept), events[keep])
    early = events["t"] < duration
    assert early.sum() >= 21
    # with a 0 start every early event is "supported" by pixels that never fired
    assert keep[early].all() if dv_compatible else not keep[0]


def test_refractory_equals_reference_on_dvxplorer(recordings):
    (width, height), _, events = dvxplorer(recordings)
    period = 3000
    keep = np.empty(len(events), bool)
    last = last_times(width, height)
    for lo, hi in ((0, 40_000), (40_000, len(events))):  # state carries across packets
        chunk = events[lo:hi]
        refractory(chunk["t"], chunk["x"], chunk["y"], last, period, keep[lo:hi])
    expected, fired = [], {}
    for t, x, y in events[["t", "x", "y"]].tolist():
        ok = (x, y) not in fired or t - fired[(x, y)] >= period
        if ok:
            fired[(x, y)] = t
        expected.append(ok)
    np.testing.assert_array_equal(keep, expected)
    assert 0 < keep.sum() < len(events)


def test_pixel_mask_equals_dv_region_and_mask_filters(recordings):
    (width, height), batches, events = dvxplorer(recordings)
    x0, y0, w, h = 40, 30, 120, 90
    roi = np.zeros((height, width), bool)
    roi[y0:y0 + h, x0:x0 + w] = True
    rng = np.random.default_rng(1)
    mask = rng.random((height, width)) > 0.2
    for ours_mask, dv_filter in ((roi, dv.EventRegionFilter((x0, y0, w, h))),
                                 (mask, dv.EventMaskFilter(mask.astype(np.uint8)))):
        theirs = []
        for batch in batches:
            dv_filter.accept(batch)
            theirs.append(from_dv(dv_filter.generateEvents()).copy())
        keep = np.empty(len(events), bool)
        n = pixel_mask(events["x"], events["y"], ours_mask, keep)
        np.testing.assert_array_equal(events[keep], np.concatenate(theirs))
        assert 0 < n < len(events)


def test_count_events_counts_per_pixel(recordings):
    (width, height), _, events = dvxplorer(recordings)
    counts = np.zeros((height, width), np.int64)
    count_events(events["x"], events["y"], counts)
    expected = np.zeros((height, width), np.int64)
    np.add.at(expected, (events["y"], events["x"]), 1)
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == len(events)
