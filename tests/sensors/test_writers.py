"""Writers and `evpipe convert`: round trips are exact; other writable formats read back equal."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.cli.main import main
from sensors.readers import FormatError, read_all

SOURCES = ["aedat4/dvxplorer_sample.aedat4", "jaer/dvs128_short.aedat", "prophesee/evt3_sample.raw",
           "prophesee/NCARS_obj_004397_td.dat"]


@pytest.mark.parametrize("suffix", [".aedat4", ".npy", ".csv", ".aedat"])
@pytest.mark.parametrize("source", SOURCES)
def test_convert_round_trip_is_exact(recordings, tmp_path, capsys, source, suffix):
    original_reader, original = read_all(recordings / source)
    out = tmp_path / f"converted{suffix}"
    assert main(["convert", str(recordings / source), str(out)]) == 0
    assert f"{len(original)} events" in capsys.readouterr().out
    reader, events = read_all(out)
    assert (reader.width, reader.height) == (original_reader.width, original_reader.height) or (
        suffix == ".npy")  # .npy carries no sensor size: max coordinate + 1
    assert len(events) == len(original)
    for field in "txyp":
        assert (events[field] == original[field]).all(), field


def test_convert_passes_reader_options(recordings, tmp_path, capsys):
    out = tmp_path / "evt3.npy"
    assert main(["convert", str(recordings / "prophesee/evt3_sample.raw"), str(out), "-o",
                 "evt3_time=expelliarmus"]) == 0
    assert (np.load(out)["t"] == np.load(recordings / "prophesee/evt3_sample.npy")["t"]).all()


def test_convert_to_unknown_suffix_is_an_error(recordings, tmp_path, capsys):
    assert main(["convert", str(recordings / "prophesee/NCARS_obj_004397_td.dat"),
                 str(tmp_path / "out.xyz")]) == 2
    assert "cannot write '.xyz'" in capsys.readouterr().err


def test_info_reports_bad_files_without_traceback(tmp_path, capsys):
    path = tmp_path / "bad.raw"
    path.write_bytes(b"% evt 3.0\n\x01")
    assert main(["info", str(path)]) == 2
    assert f"{path} at byte 10: truncated record" in capsys.readouterr().err


def test_event_stream_and_hdf5_read_back(recordings, tmp_path):
    """.es (written by faery) and DSEC-layout HDF5 (written by h5py) of real events read back."""
    import h5py
    from faery.extension import es

    reader, events = read_all(recordings / "aedat4/dvxplorer_sample.aedat4")
    with es.Encoder(tmp_path / "d.es", "dvs", False, (320, 240)) as encoder:
        packet = np.zeros(len(events), [("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])
        packet["t"], packet["x"], packet["on"] = events["t"] - events["t"][0], events["x"], events["p"]
        packet["y"] = 239 - events["y"]  # Event Stream counts y from the bottom
        encoder.write(packet)
    es_reader, es_events = read_all(tmp_path / "d.es")
    assert (es_reader.format, es_reader.width, es_reader.height) == ("es", 320, 240)
    assert (es_events["t"] == events["t"] - events["t"][0]).all()
    for field in "xyp":
        assert (es_events[field] == events[field]).all()

    offset = int(events["t"][0])
    with h5py.File(tmp_path / "d.h5", "w") as handle:
        group = handle.create_group("events")
        for field, dtype in (("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")):
            group.create_dataset(field, data=(events[field] - (offset if field == "t" else 0)).astype(dtype))
        handle.create_dataset("t_offset", data=offset)
    h5_reader, h5_events = read_all(tmp_path / "d.h5", sensor="320x240")
    assert (h5_reader.format, h5_reader.width) == ("hdf5", 320)
    assert (h5_events == events).all()


def test_aedat3_reader_on_own_writer(recordings, tmp_path):
    """AEDAT 3.1 (no sample exists): real events written as polarity packets, read back exactly,
    including timestamps beyond 2**31 us that need the packet's overflow counter."""
    from sensors.aedat3 import write_aedat3

    _, events = read_all(recordings / "aedat4/dvxplorer_sample.aedat4")
    assert events["t"][0] > 2 ** 31
    write_aedat3(tmp_path / "e.aedat", events, 320, 240, "DVXplorer Lite")
    reader, back = read_all(tmp_path / "e.aedat")
    assert (reader.format, reader.width, reader.height) == ("aedat3", 320, 240)
    assert (back == events).all()
    data = bytearray((tmp_path / "e.aedat").read_bytes())
    start = data.index(b"#!END-HEADER\r\n") + 14
    data[start + 4:start + 8] = (3).to_bytes(4, "little")  # event size 3 in a polarity packet
    (tmp_path / "bad.aedat").write_bytes(bytes(data))
    with pytest.raises(FormatError) as err:
        read_all(tmp_path / "bad.aedat")
    assert err.value.offset == start and "corrupt packet header" in str(err.value)
