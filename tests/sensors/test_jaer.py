"""jAER AEDAT 2.0: the DVS128 sample against tonic, and the DAVIS layout on real events.

No DAVIS AEDAT 2.0 recording with events is in shared/recordings, so one is built here: the real
DAVIS346 header of jaer/header_only.aedat, then the real DVXplorer events of the AEDAT 4.0 sample
(320x240, moved to touch the right and bottom edges of the 346x260 array) encoded as jAER writes
them (sensors/jaer.py), with APS, IMU and external-input records between them and a 2**32 us
timestamp wrap in the middle.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_sensors import tonic_dvs128_events
from pipeline.core.events import EVENT_DTYPE
from sensors.common import split_header
from sensors.readers import FormatError, read_all

WIDTH, HEIGHT = 346, 260
RECORD = np.dtype([("a", ">u4"), ("t", ">u4")])


def test_dvs128_equals_tonic_generic_reader(recordings):
    path = str(recordings / "jaer/dvs128_short.aedat")
    reader, ours = read_all(path)
    assert (reader.width, reader.height, reader.streams) == (128, 128, [])
    assert ours.dtype == EVENT_DTYPE and np.array_equal(ours, tonic_dvs128_events(path))


def test_aedat1_records_decode_as_aedat2(recordings, tmp_path):
    """The DVS128 sample rewritten as AEDAT 1.0 (16-bit addresses, 6-byte records)."""
    path = recordings / "jaer/dvs128_short.aedat"
    _, expected = read_all(path)
    data = path.read_bytes()
    _, body = split_header(str(path), data, b"#", b"#!END-HEADER")
    records = np.frombuffer(data[body:], RECORD)
    old = np.empty(len(records), [("a", ">u2"), ("t", ">u4")])
    old["a"], old["t"] = records["a"], records["t"]
    (tmp_path / "v1.aedat").write_bytes(data[:body].replace(b"#!AER-DAT2.0", b"#!AER-DAT1.0", 1)
                                        + old.tobytes())
    assert np.array_equal(read_all(tmp_path / "v1.aedat")[1], expected)


@pytest.fixture(scope="module")
def davis346(recordings, tmp_path_factory):
    """(path, the events it holds, the records written, which records are DVS events)."""
    _, source = read_all(recordings / "aedat4/dvxplorer_sample.aedat4")
    events = source.copy()
    events["x"] += WIDTH - 320
    events["y"] += HEIGHT - 240
    events["t"] -= events["t"][0] - (1 << 32) + 300_000  # raw timestamps wrap 0.3 s in
    dvs = np.zeros(len(events), RECORD)
    dvs["a"] = (((HEIGHT - 1 - events["y"].astype(np.uint32)) << 22)
                | ((WIDTH - 1 - events["x"].astype(np.uint32)) << 12)
                | (events["p"].astype(np.uint32) << 11))
    dvs["t"] = events["t"] & 0xFFFFFFFF

    rng = np.random.default_rng(346)
    others = np.sort(rng.integers(0, len(events), 3000))
    other = np.zeros(len(others), RECORD)
    kinds = rng.integers(0, 3, len(others))
    other["a"] = np.select([kinds == 0, kinds == 1], [
        0x80000000 | rng.integers(0, 1 << 31, len(others)),  # APS sample: bit 31, ADC value and address
        0x80000C00 | (rng.integers(0, 1 << 19, len(others)) << 12),  # IMU sample
    ], 0x00000400 | (rng.integers(0, 4, len(others)) << 1))  # external input (special) event
    other["a"][0] = 0x80000000  # the data starts with an APS sample, never with a "#" byte
    other["t"] = dvs["t"][others]
    records = np.insert(dvs, others, other)
    is_dvs = np.ones(len(records), bool)
    is_dvs[others + np.arange(len(others))] = False
    path = tmp_path_factory.mktemp("jaer") / "davis346.aedat"
    path.write_bytes((recordings / "jaer/header_only.aedat").read_bytes() + records.tobytes())
    return path, events, records, is_dvs


def test_davis346_events_exactly(davis346):
    path, events, records, is_dvs = davis346
    assert (records["t"][is_dvs][1:] < records["t"][is_dvs][:-1]).sum() == 1  # the wrap
    reader, ours = read_all(path)
    assert (reader.format, reader.width, reader.height) == ("aedat2", WIDTH, HEIGHT)
    assert reader.streams == ["aps_imu", "special"]
    assert (ours["x"].max(), ours["y"].max()) == (WIDTH - 1, HEIGHT - 1)
    assert np.array_equal(ours, events)


def test_davis346_agrees_with_tonic_read_davis_346(davis346):
    """tonic keeps every record (APS, IMU and special ones too) and does not unwrap timestamps;
    like ours, it flips y to the top-left origin (259 - stored y)."""
    import tonic

    path, _, records, is_dvs = davis346
    _, ours = read_all(path)
    shape, _, theirs = tonic.io.read_davis_346(str(path))
    assert shape == (WIDTH, HEIGHT) and len(theirs) == len(records)
    theirs = theirs[is_dvs]
    assert (theirs["x"] == ours["x"]).all() and (theirs["p"] == ours["p"]).all()
    assert (theirs["y"] == ours["y"]).all()
    assert (theirs["t"] == ours["t"] & 0xFFFFFFFF).all()


def test_davis346_event_outside_the_sensor_names_its_offset(davis346, tmp_path):
    path, _, records, is_dvs = davis346
    data = bytearray(path.read_bytes())
    body = len(data) - records.nbytes
    bad = int(np.flatnonzero(is_dvs)[5000])
    broken = records.copy()
    broken["a"][bad] |= 0x3FF << 12  # raw x 1023: x = 345 - 1023
    data[body:] = broken.tobytes()
    (tmp_path / "bad.aedat").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="x=-678 y=") as error:
        read_all(tmp_path / "bad.aedat")
    assert error.value.offset == body + bad * RECORD.itemsize
