"""Cutting packets by sensor time or by count, streaming or all at once, on real recordings."""

from __future__ import annotations

import numpy as np

from pipeline.core.packet import Packetizer, cut_points
from sensors.readers import read_all
from tests.conftest import AEDAT4_SAMPLE


def reference_cuts(t, max_us, max_count):
    """One event at a time: close the packet when the next event is outside its window or full."""
    ends, start = [], 0
    for i in range(1, len(t) + 1):
        if i == len(t) or t[i] >= t[start] + max_us or i - start >= max_count:
            ends.append(i)
            start = i
    return ends


def test_cut_points_match_reference_on_real_events():
    _, events = read_all(AEDAT4_SAMPLE)
    t = events["t"][:40000]
    for max_us, max_count in ((1000, 10_000), (1000, 50), (200, 10_000), (5000, 333)):
        assert cut_points(t, max_us, max_count).tolist() == reference_cuts(t, max_us, max_count)


def test_streaming_packetizer_equals_one_shot():
    _, events = read_all(AEDAT4_SAMPLE)
    whole = Packetizer(1000, 500)
    expected = whole.push(events) + whole.flush()
    streaming = Packetizer(1000, 500)
    got = []
    rng = np.random.default_rng(0)
    bounds = np.sort(rng.choice(len(events), 60, replace=False))
    for chunk in np.split(events, bounds):
        got += streaming.push(chunk)
    got += streaming.flush()
    assert len(got) == len(expected) > 100
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert sum(len(p) for p in got) == len(events) == 111_954
    for packet in got:
        assert len(packet) <= 500 and packet["t"][-1] - packet["t"][0] < 1000
