"""Writers and `evpipe convert`: round trips are exact, sensor size included; other writable
formats read back equal; output folders are created; bad outputs are one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.cli.main import main
from sensors.readers import FormatError, read_all
from sensors.writers import Aedat4Writer
from tests.conftest import AEDAT4_SAMPLE, ROOT

SOURCES = ["aedat4/dvxplorer_sample.aedat4", "jaer/dvs128_short.aedat", "prophesee/evt3_sample.raw",
           "prophesee/NCARS_obj_004397_td.dat"]


DAT = "prophesee/NCARS_obj_004397_td.dat"  # 304x240, coordinates up to 54x61 only


def cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m pipeline.cli ARGS`` in a child process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("suffix", [".aedat4", ".npz", ".csv", ".aedat"])
@pytest.mark.parametrize("source", SOURCES)
def test_convert_round_trip_is_exact(recordings, tmp_path, capsys, source, suffix):
    original_reader, original = read_all(recordings / source)
    out = tmp_path / f"converted{suffix}"
    assert main(["convert", str(recordings / source), str(out)]) == 0
    assert f"{len(original)} events" in capsys.readouterr().out
    reader, events = read_all(out)
    assert (reader.width, reader.height) == (original_reader.width, original_reader.height)
    assert len(events) == len(original)
    for field in "txyp":
        assert (events[field] == original[field]).all(), field


def test_convert_passes_reader_options(recordings, tmp_path, capsys):
    out = tmp_path / "evt3.npz"
    assert main(["convert", str(recordings / "prophesee/evt3_sample.raw"), str(out), "-o",
                 "evt3_time=expelliarmus"]) == 0
    with np.load(out) as archive:
        assert (archive["events"]["t"] == np.load(recordings / "prophesee/evt3_sample.npy")["t"]).all()
        assert (int(archive["width"]), int(archive["height"])) == (1280, 720)


def test_npz_keeps_the_sensor_size_through_info_and_a_second_conversion(recordings, tmp_path):
    """The DAT file's events only reach x=53, y=60: a size from the coordinates would be 54x61."""
    _, original = read_all(recordings / DAT)
    assert (original["x"].max(), original["y"].max()) == (53, 60)
    npz, aedat4 = tmp_path / "a" / "ncars.npz", tmp_path / "b" / "ncars.aedat4"
    assert cli("convert", str(recordings / DAT), str(npz)).returncode == 0
    described = cli("info", "--json", str(npz))
    assert described.returncode == 0
    assert {k: v for k, v in json.loads(described.stdout).items() if k in ("format", "width", "height", "events")} \
        == {"format": "numpy", "width": 304, "height": 240, "events": 4407}
    done = cli("convert", str(npz), str(aedat4))
    assert done.returncode == 0 and "4407 events 304x240" in done.stdout
    reader, events = read_all(aedat4)
    assert (reader.format, reader.width, reader.height) == ("aedat4", 304, 240)
    assert (events == original).all()
    assert read_all(npz, sensor="346x260")[0].width == 346  # an explicit size still wins


def test_npy_output_is_refused_naming_the_path(recordings, tmp_path):
    out = tmp_path / "missing" / "dir" / "x.npy"
    done = cli("convert", str(recordings / DAT), str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"evpipe convert: {out}: a .npy file cannot hold the sensor size; "
                                   f"write .npz (events, width, height)")
    assert not out.parent.exists()


@pytest.mark.parametrize("suffix", [".npz", ".aedat4", ".csv", ".aedat"])
def test_convert_creates_the_missing_output_folder(recordings, tmp_path, suffix):
    out = tmp_path / "missing" / "dir" / f"x{suffix}"
    done = cli("convert", str(recordings / DAT), str(out))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert len(read_all(out)[1]) == 4407


@pytest.mark.parametrize("suffix", [".npz", ".aedat4"])
def test_an_output_folder_that_cannot_be_made_is_one_line_naming_it(recordings, tmp_path, suffix):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "dir" / f"x{suffix}"
    done = cli("convert", str(recordings / DAT), str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and str(out) in done.stderr


def test_convert_to_unknown_suffix_is_an_error(recordings, tmp_path, capsys):
    assert main(["convert", str(recordings / "prophesee/NCARS_obj_004397_td.dat"),
                 str(tmp_path / "out.xyz")]) == 2
    assert "cannot write '.xyz'; writable: .aedat4, .npz, .csv, .aedat, .mcap" in capsys.readouterr().err
    # with --topic too, the output is what is wrong, not the input
    assert main(["convert", str(recordings / "prophesee/NCARS_obj_004397_td.dat"),
                 str(tmp_path / "bag"), "--topic", "/events"]) == 2
    assert "bag: cannot write 'files without a suffix'" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".aedat4"])
def test_converting_a_file_onto_itself_is_refused_and_keeps_it(recordings, tmp_path, capsys, suffix):
    path = tmp_path / f"events{suffix}"
    assert main(["convert", str(recordings / DAT), str(path)]) == 0
    kept = path.read_bytes()
    assert main(["convert", str(path), str(path)]) == 2
    assert f"{path}: is the input itself; write to another path" in capsys.readouterr().err
    assert path.read_bytes() == kept


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


def test_aedat4_writer_writes_chunk_by_chunk_for_dv_processing_and_faery(tmp_path):
    """The incremental writer's file, read by dv-processing alone (no container check) and by
    faery: the same events, size and camera name."""
    import dv_processing as dv
    import faery

    _, events = read_all(AEDAT4_SAMPLE)
    path = tmp_path / "new" / "rec.aedat4"
    with Aedat4Writer(path, 320, 240, camera="DVXplorer test") as writer:
        for start in range(0, len(events), 7_000):
            writer.write(events[start:start + 7_000])
        writer.write(events[:0])
    assert writer.count == len(events)
    reader, back = read_all(path, validate=0)
    assert (reader.width, reader.height) == (320, 240) and (back == events).all()
    assert dv.io.MonoCameraRecording(str(path)).getCameraName() == "DVXplorer test"
    theirs = np.concatenate(list(faery.file_decoder.Decoder(path)))
    assert (theirs["t"] == events["t"]).all() and (theirs["x"] == events["x"]).all()
    assert (theirs["y"] == events["y"]).all() and (theirs["on"] == events["p"].astype(bool)).all()


def test_aedat4_writer_refuses_events_out_of_time_order(tmp_path):
    _, events = read_all(AEDAT4_SAMPLE)
    path = tmp_path / "rec.aedat4"
    late = events[1000:2000].copy()
    late["t"][300] = late["t"][299] - 1
    with Aedat4Writer(path, 320, 240) as writer:
        writer.write(events[:1000])
        with pytest.raises(FormatError, match=f"event 1300 has t={late['t'][300]} us, after "
                                              f"{late['t'][299]} us") as err:
            writer.write(late)
        assert err.value.path == str(path)
    assert (read_all(path)[1] == events[:1000]).all()  # what came before the error is kept
    negative = events[:1].copy()
    negative["t"] = -1
    with Aedat4Writer(tmp_path / "negative.aedat4", 320, 240) as writer:
        with pytest.raises(FormatError, match="from t = 0: event 0 has t=-1 us, after 0 us"):
            writer.write(negative)
