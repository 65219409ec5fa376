"""Every recording in shared/recordings/MANIFEST.md read exactly, through `evpipe info --json`."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
import tonic

from pipeline.cli.main import main
from sensors.readers import read_all
from sensors.replay import dataset_files

# file, reader options, events, t_first, t_last, on_fraction (MANIFEST.md, "Unlabelled recordings")
MANIFEST = [
    ("aedat4/dvxplorer_sample.aedat4", [], 111954, 1605537493718345, 1605537494308262, 0.4915),
    ("jaer/dvs128_short.aedat", [], 130114, 113476330, 119657829, 0.5763),
    ("jaer/header_only.aedat", [], 0, None, None, None),
    ("prophesee/evt2_sample.raw", [], 539481, 1317888, 1367888, 0.6819),
    ("prophesee/evt3_sample.raw", ["-o", "evt3_time=expelliarmus"], 219596, 11718656, 11772513, 0.5261),
    ("prophesee/evt3_test_pedestrians.raw", ["-o", "evt3_time=expelliarmus"], 5000, 5840504, 5930770,
     0.5788),
    ("prophesee/NCARS_obj_004397_td.dat", [], 4407, 0, 99937, 0.3792),
    ("eventstream/dvs_disc.csv", [], 473225, 0, 999000, 0.5706),
    ("gesture/clip1.bin", [], 63471, None, None, None),
    ("gesture/clip2.bin", [], 84260, None, None, None),
    ("gesture/clip3.bin", [], 113063, None, None, None),
    ("gesture/clip4.bin", [], 151879, None, None, None),
    ("gesture/clip5.bin", [], 181179, None, None, None),
]
SIZES = {"aedat4": (320, 240), "jaer/dvs128": (128, 128), "evt2": (640, 480), "evt3": (1280, 720),
         "csv": (320, 240), "gesture": (128, 128)}


def info_json(capsys, *argv) -> dict:
    assert main(["info", "--json", *map(str, argv)]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name,options,events,t_first,t_last,on", MANIFEST, ids=[m[0] for m in MANIFEST])
def test_manifest_figures(recordings, capsys, name, options, events, t_first, t_last, on):
    summary = info_json(capsys, recordings / name, *options)
    assert summary["events"] == events
    if name.startswith("gesture/"):  # MANIFEST: "about 0 .. 1450000, about 0.5"; tonic reads them exactly
        theirs = tonic.io.read_mnist_file(str(recordings / name), dtype=tonic.datasets.NMNIST.dtype)
        assert (summary["t_first"], summary["t_last"]) == (theirs["t"][0], theirs["t"][-1])
        assert summary["on_fraction"] == round(float(theirs["p"].mean()), 4)
        assert 0 <= summary["t_first"] < 1000 and 1_440_000 < summary["t_last"] <= 1_450_000
    else:
        assert (summary["t_first"], summary["t_last"], summary["on_fraction"]) == (t_first, t_last, on)
    size = next((s for key, s in SIZES.items() if key in name), None)
    if size:
        assert (summary["width"], summary["height"]) == size
    assert summary["duration"] == (None if not events else summary["t_last"] - summary["t_first"])


def test_aedat4_lists_other_streams(recordings, capsys):
    summary = info_json(capsys, recordings / "aedat4/dvxplorer_sample.aedat4")
    assert summary["streams"] == ["imu", "triggers"]


def faery_events(path, size) -> np.ndarray:
    from faery.extension import evt

    with evt.Decoder(path, size, None) as decoder:
        return np.concatenate([p["events"] for p in decoder if "events" in p])


@pytest.mark.parametrize("stem,size", [("evt2_sample", (640, 480)), ("evt3_sample", (1280, 720)),
                                       ("evt3_test_pedestrians", (1280, 720))])
def test_raw_default_equals_faery_event_by_event(recordings, stem, size):
    path = recordings / "prophesee" / f"{stem}.raw"
    _, ours = read_all(path)
    theirs = faery_events(path, size)
    assert len(ours) == len(theirs)
    for ours_field, field in (("t", "t"), ("x", "x"), ("y", "y"), ("p", "on")):
        assert (ours[ours_field] == theirs[field].astype(np.int64)).all(), field


def test_evt3_time_modes(recordings, capsys):
    """The three EVT 3.0 time semantics, each named after the decoder it reproduces.

    faery (the default) never lets the event time go back, so it ignores the sensor's TIME_LOW
    steps back (3 to 11 us, about every ms in evt3_sample); openeb takes the time words as they
    are, so it runs behind faery by those steps; expelliarmus adds 4096 us at every backward
    TIME_LOW step, also when a TIME_HIGH already carried the wrap (MANIFEST's last timestamps and
    the .npy twins, 11 x 4096 us ahead by the end of each file). Coordinates and polarities agree.
    """
    for stem, last, behind_most in (("evt3_sample", 11727467, 11), ("evt3_test_pedestrians", 5885714, 0)):
        path = recordings / "prophesee" / f"{stem}.raw"
        twin = np.load(path.with_suffix(".npy"))
        summary = info_json(capsys, path)
        assert (summary["events"], summary["t_last"]) == (len(twin), last)
        _, ours = read_all(path)
        _, openeb = read_all(path, evt3_time="openeb")
        behind = ours["t"] - openeb["t"]
        assert behind.min() == 0 and behind.max() == behind_most
        ahead = twin["t"] - openeb["t"]
        assert (ahead % 4096 == 0).all() and ahead[-1] == 11 * 4096
        for field in "xyp":
            assert (openeb[field] == ours[field]).all() and (twin[field] == ours[field]).all()


@pytest.mark.parametrize("stem,twin", [("evt3_sample.raw", "evt3_sample.npy"),
                                       ("evt3_test_pedestrians.raw", "evt3_test_pedestrians.npy"),
                                       ("NCARS_obj_004397_td.dat", "dat_sample.npy")])
def test_prophesee_equals_npy_twin_event_by_event(recordings, stem, twin):
    options = {"evt3_time": "expelliarmus"} if stem.endswith(".raw") else {}
    _, ours = read_all(recordings / "prophesee" / stem, **options)
    expected = np.load(recordings / "prophesee" / twin)
    assert len(ours) == len(expected)
    for field in "txyp":
        assert (ours[field] == expected[field].astype(np.int64)).all(), field


def test_nmnist_dataset_matches_manifest(recordings):
    files = dataset_files(recordings / "nmnist" / "Train")
    assert len(files) == 1000
    assert Counter(f.label for f in files) == {"0": 97, "1": 116, "2": 99, "3": 93, "4": 105, "5": 92,
                                               "6": 94, "7": 117, "8": 87, "9": 100}
    counts = [len(read_all(f.path)[1]) for f in files]
    # MANIFEST says "1,069 to 7,152 events"; the smallest file holds 1,112 records (5-byte
    # records, also what tonic.io.read_mnist_file counts), so the stated minimum is off.
    assert counts == [os.path.getsize(f.path) // 5 for f in files]
    assert (min(counts), max(counts)) == (1112, 7152)


def test_csv_columns_by_index_and_scale(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text("0.5;3;4;-1\n0.75;5;6;1\n")
    _, events = read_all(path, "csv", columns="0,1,2,3", delimiter=";", t_scale=1e6, sensor="8x8")
    assert events.tolist() == [(500000, 3, 4, 0), (750000, 5, 6, 1)]
