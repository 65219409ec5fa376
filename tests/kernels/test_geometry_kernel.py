"""The scale kernel (crop, down-scale, integrate-and-fire merge) against a per-event reference
and against tonic's CenterCrop and Downsample on the DVXplorer recording."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import tonic

from kernels.geometry import (
    area_threshold,
    counters,
    scale,
    scale_records,
    scale_tables,
)
from sensors.readers import read_all
from tests.conftest import AEDAT4_SAMPLE


@pytest.fixture(scope="module")
def dvxplorer():
    reader, events = read_all(AEDAT4_SAMPLE)
    assert (reader.width, reader.height) == (320, 240)
    return events


def reference(events, x0, y0, width, height, out_width, out_height, threshold):
    """Per event, in plain Python: inside the region? Its output pixel by exact fractions;
    one counter per output pixel and polarity, an event out each time it reaches threshold."""
    counts, out = {}, []
    for t, x, y, p in events[["t", "x", "y", "p"]].tolist():
        if not (x0 <= x < x0 + width and y0 <= y < y0 + height):
            continue
        xo = int(Fraction(x - x0) * Fraction(out_width, width))  # floor: both are >= 0
        yo = int(Fraction(y - y0) * Fraction(out_height, height))
        key = (xo, yo, p != 0)
        counts[key] = counts.get(key, 0) + 1
        if counts[key] == threshold:
            counts[key] = 0
            out.append((t, xo, yo, p))
    return out


def run(events, region, out_size, threshold, packet=None, records=False):
    """The kernel over ``events``, in packets of ``packet`` events (None: in one go), with the
    counters carried from packet to packet; ``records``: its entry on structured records."""
    counts = counters(*out_size)
    kept = []
    step = packet or max(len(events), 1)
    for start in range(0, len(events), step):
        chunk = events[start:start + step]
        if records:
            out = np.empty(len(chunk), chunk.dtype)
            tables = scale_tables(*region[2:], *out_size)
            kept.append(out[:scale_records(chunk, *region[:2], *tables, threshold, counts, out)])
            continue
        keep = np.empty(len(chunk), bool)
        x = np.empty(len(chunk), np.int16)
        y = np.empty(len(chunk), np.int16)
        n = scale(chunk["x"], chunk["y"], chunk["p"], *region, threshold, counts, x, y, keep)
        assert n == keep.sum()
        out = chunk[keep]
        out["x"], out["y"] = x[keep], y[keep]
        kept.append(out)
    return np.concatenate(kept), counts


@pytest.mark.parametrize("region,out_size,threshold", [
    ((0, 0, 320, 240), (34, 34), 1),                     # the whole sensor, every event kept
    ((0, 0, 320, 240), (34, 34), area_threshold(320, 240, 34, 34)),
    ((40, 0, 240, 240), (34, 34), area_threshold(240, 240, 34, 34)),  # a centred square
    ((13, 27, 301, 190), (17, 13), 5),                   # fractional factors, odd region
])
def test_scale_equals_the_reference_packet_by_packet(dvxplorer, region, out_size, threshold):
    events = dvxplorer[:40_000]
    want = reference(events, *region, *out_size, threshold)
    got, _ = run(events, region, out_size, threshold, packet=997)
    assert got[["t", "x", "y", "p"]].tolist() == want
    assert len(got) > 100
    whole, _ = run(events, region, out_size, threshold)
    assert np.array_equal(whole, got)
    records, _ = run(events, region, out_size, threshold, packet=997, records=True)
    assert np.array_equal(records, got)


def test_threshold_one_is_tonics_downsample_on_the_dvxplorer_recording(dvxplorer):
    """Every event kept, at the coordinates tonic's Downsample gives for 320 x 240 -> 34 x 34."""
    ours, _ = run(dvxplorer, (0, 0, 320, 240), (34, 34), 1)
    theirs = tonic.transforms.Downsample(sensor_size=(320, 240, 2), target_size=(34, 34))(dvxplorer)
    assert len(ours) == len(dvxplorer) == 111_954
    assert np.array_equal(ours[["t", "x", "y", "p"]], theirs[["t", "x", "y", "p"]])
    assert ours["x"].max() == 33 and ours["y"].max() == 33


def test_a_centred_crop_is_tonics_center_crop_then_downsample(dvxplorer):
    crop = tonic.transforms.CenterCrop(sensor_size=(320, 240, 2), size=240)
    down = tonic.transforms.Downsample(sensor_size=(240, 240, 2), target_size=(34, 34))
    theirs = down(crop(dvxplorer))
    ours, _ = run(dvxplorer, (40, 0, 240, 240), (34, 34), 1)
    assert 0 < len(ours) < len(dvxplorer)
    assert np.array_equal(ours[["t", "x", "y", "p"]], theirs[["t", "x", "y", "p"]])


@pytest.mark.parametrize("width", [128, 240, 260, 320, 346, 480, 640, 720, 1280])
def test_exact_rule_and_tonics_float_product_agree_on_camera_sizes(width):
    events = np.zeros(width, [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")])
    events["x"] = events["y"] = np.arange(width)
    down = tonic.transforms.Downsample(sensor_size=(width, width, 2), target_size=(34, 34))
    ours, _ = run(events, (0, 0, width, width), (34, 34), 1)
    assert np.array_equal(down(events)["x"], ours["x"])
    assert np.array_equal(ours["x"], np.arange(width) * 34 // width)


def test_the_exact_rule_where_tonics_float_product_lands_one_pixel_low():
    """44 -> 30 px: 22 * 30 / 44 is exactly 15; 22 * (30 / 44) in float64 is 14.999..."""
    events = np.zeros(1, [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")])
    events["x"] = 22
    theirs = tonic.transforms.Downsample(sensor_size=(44, 44, 2), target_size=(30, 30))(events)
    ours, _ = run(events, (0, 0, 44, 44), (30, 30), 1)
    assert theirs["x"][0] == 14 and ours["x"][0] == 15


def test_integrate_and_fire_bounds_each_output_pixel_to_its_input_over_threshold(dvxplorer):
    threshold = area_threshold(320, 240, 34, 34)
    assert threshold == 320 * 240 // (34 * 34) == 66
    out, counts = run(dvxplorer, (0, 0, 320, 240), (34, 34), threshold, packet=5000)
    incoming = np.zeros((2, 34, 34), np.int64)
    np.add.at(incoming, ((dvxplorer["p"] != 0).astype(int), dvxplorer["y"] * 34 // 240,
                         dvxplorer["x"] * 34 // 320), 1)
    emitted = np.zeros((2, 34, 34), np.int64)
    np.add.at(emitted, ((out["p"] != 0).astype(int), out["y"], out["x"]), 1)
    assert np.array_equal(emitted, incoming // threshold)
    assert np.array_equal(counts, incoming % threshold)  # what is left waits for more events
    assert len(dvxplorer) // threshold - 2 * 34 * 34 < len(out) <= len(dvxplorer) // threshold
    assert np.all(np.diff(out["t"]) >= 0)  # output times are input times, in order
