"""The live read-out in the real graph: a marker-free recording of the bundled samples replayed in
real time through one process per node, with live links, as a camera would feed it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.learn.continuous import Stream, live_graph_config, score
from pipeline.learn.evaluate import evaluate
from sensors.continuous import add_noise, concatenate, interleave
from sensors.replay import dataset_files
from sensors.writers import write_npz
from tests.conftest import ROOT

MODEL = ROOT / "recordings" / "model.npz"
BUNDLED = ROOT / "recordings" / "nmnist"

@pytest.fixture(scope="module")
def marker_accuracy():
    return evaluate(MODEL, dataset_files(BUNDLED)).metrics["accuracy_early"]


@pytest.mark.parametrize("gap_ms,noise", [(0, 0.0), (100, 0.0), (300, 0.0), (100, 2000.0)])
def test_each_object_decided_once_in_the_running_graph(tmp_path, gap_ms, noise, marker_accuracy):
    events, shown, width, height = concatenate(interleave(dataset_files(BUNDLED)), gap_ms * 1000)
    object_times = [events["t"][(events["t"] >= s.onset_us) & (events["t"] <= s.end_us)] for s in shown]
    recording = tmp_path / "stream.npz"
    write_npz(str(recording), [add_noise(events, noise, width, height)], width, height)
    out = tmp_path / "decisions.jsonl"
    config = tmp_path / "live.toml"
    config.write_text(live_graph_config(recording, MODEL, out, f"live-{gap_ms}-{int(noise)}"))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    decisions = [json.loads(line) for line in out.read_text().splitlines()]
    result = score(decisions, Stream([], shown, object_times))
    assert result["found"] == result["objects"] == 20, decisions
    assert result["decided_once"] == 1.0 and result["extra_decisions"] == 0
    assert result["accuracy_first"] >= marker_accuracy - 0.05
    assert all(d["segment_name"] == f"object-{i}" for i, d in enumerate(decisions))
    assert np.all(np.diff([d["t"] for d in decisions]) > 0)
