"""xy_range against numpy min/max on real recordings and on edge cases."""

from __future__ import annotations

import numpy as np

from kernels.bounds import xy_range
from pipeline.core.events import FEATURE_DTYPE
from sensors.readers import read_all
from tests.conftest import AEDAT4_SAMPLE, RECORDINGS


def reference(records):
    return (int(records["x"].min()), int(records["x"].max()), int(records["y"].min()), int(records["y"].max()))


def test_matches_numpy_on_real_recordings():
    for path in (AEDAT4_SAMPLE, RECORDINGS / "prophesee" / "evt3_sample.raw"):
        _, events = read_all(path)
        for chunk in (events, events[:1], events[1000:1003], events[-777:]):
            words = chunk.view(np.int16).reshape(len(chunk), -1)
            assert xy_range(words) == reference(chunk)
            received = np.frombuffer(chunk.tobytes(), np.int16).reshape(len(chunk), -1)  # read-only
            assert xy_range(received) == reference(chunk)


def test_negative_and_extreme_coordinates_in_feature_records():
    records = np.zeros(5, FEATURE_DTYPE)
    records["x"] = [3, -2, 32767, 0, 5]
    records["y"] = [-32768, 4, 4, 9, 1]
    words = records.view(np.int16).reshape(len(records), -1)
    assert xy_range(words) == (-2, 32767, -32768, 9)
