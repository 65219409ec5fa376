"""The bundled continuous recording (recordings/live): rebuilt byte for byte by its command, and
its ground truth agrees with the events in it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from sensors.readers import read_all
from sensors.replay import dataset_files
from tests.conftest import ROOT

LIVE = ROOT / "recordings" / "live"


def test_the_build_command_rebuilds_recording_and_ground_truth(tmp_path):
    out = tmp_path / "stream.aedat4"
    done = subprocess.run([sys.executable, str(LIVE / "build.py"), str(out)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("79159 events, 20 objects, 34x34 -> ")
    assert out.read_bytes() == (LIVE / "nmnist_stream.aedat4").read_bytes()
    assert (tmp_path / "stream.json").read_text() == (LIVE / "nmnist_stream.json").read_text()


def test_the_ground_truth_is_what_the_recording_holds():
    reader, events = read_all(LIVE / "nmnist_stream.aedat4")
    truth = json.loads((LIVE / "nmnist_stream.json").read_text())
    assert (reader.width, reader.height) == (truth["width"], truth["height"]) == (34, 34)
    objects = truth["objects"]
    assert len(events) == truth["events"] == sum(o["events"] for o in objects)
    samples = {f"{f.label}/{f.path.rsplit('/', 1)[-1]}": f for f in dataset_files(ROOT / "recordings" / "nmnist")}
    assert sorted(o["source"] for o in objects) == sorted(samples)
    for before, after in zip(objects, objects[1:]):
        assert after["onset_us"] == before["end_us"] + truth["gap_us"] + 1 == before["end_us"] + 300_001
        assert after["label"] != before["label"]  # neighbours differ: each object can be told apart
    for shown in objects:
        inside = events[(events["t"] >= shown["onset_us"]) & (events["t"] <= shown["end_us"])]
        _, sample = read_all(samples[shown["source"]].path)
        assert shown["label"] == samples[shown["source"]].label
        assert np.array_equal(inside["t"] - shown["onset_us"], sample["t"] - sample["t"][0])
        assert np.array_equal(inside[["x", "y", "p"]], sample[["x", "y", "p"]])
