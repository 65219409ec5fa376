"""`evpipe plot`: the panels hold the evaluation's numbers; bad input names the file and key."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.ui.plots import PlotInputError, check_out, figure, load_decisions, load_eval, save
from tests.conftest import ROOT

# the layout pipeline.learn.evaluate.metrics writes
RESULT = {
    "n_samples": 12, "accuracy_final": 0.75, "accuracy_early": 0.5, "early_rate": 0.8,
    "median_event_fraction": 0.4, "median_decision_us": 42_000.0, "accuracy_ann": 0.83,
    "confusion": [[4, 0, 1], [1, 3, 0], [0, 1, 2]],
    "curve": {"fraction": [0.1, 0.5, 1.0], "snn": [0.3, 0.6, 0.75], "ann": [0.4, 0.7, 0.83],
              "early_decided": [0.1, 0.5, 0.8], "early_right": [0.1, 0.4, 0.5]},
}
DECISIONS = [{"t": 1_000 + 10_000 * i, "t_start": 1_000, "class": i % 3} for i in range(12)]


def test_panels_hold_the_numbers(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({**RESULT, "decisions": DECISIONS}))
    fig = figure(load_eval(path))
    curve, confusion, times = fig.axes
    assert [line.get_ydata().tolist() for line in curve.get_lines()] == [
        RESULT["curve"][k] for k in ("snn", "ann", "early_decided", "early_right")]
    assert (np.asarray(confusion.images[0].get_array()) == RESULT["confusion"]).all()
    assert sum(patch.get_height() for patch in times.patches) == len(DECISIONS)
    assert "12 decisions" in times.get_title() and "0.750" in curve.get_title()


def test_plot_command_writes_an_image_and_rejects_bad_input(tmp_path):
    evaluation, decisions = tmp_path / "eval.json", tmp_path / "decisions.jsonl"
    evaluation.write_text(json.dumps(RESULT))
    decisions.write_text("".join(json.dumps(d) + "\n" for d in DECISIONS))
    out = tmp_path / "plots" / "eval.png"
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "plot", str(evaluation),
                          "--decisions", str(decisions), "-o", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    # the figure of the test above, decision histogram included, drawn from the two files
    drawn = tmp_path / "drawn.png"
    save(load_eval(evaluation), drawn, load_decisions(str(decisions)))
    with Image.open(out) as image, Image.open(drawn) as expected:
        assert image.size == expected.size and image.size[0] > 2 * image.size[1]
        assert np.array_equal(np.asarray(image), np.asarray(expected))
    without = tmp_path / "without.png"
    save(load_eval(evaluation), without)
    with Image.open(out) as image, Image.open(without) as other:
        assert not np.array_equal(np.asarray(image), np.asarray(other))  # the histogram shows
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({k: v for k, v in RESULT.items() if k != "confusion"}))
    bad = subprocess.run([sys.executable, "-m", "pipeline.cli", "plot", str(broken)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2
    assert f"{broken}: key 'confusion'" in bad.stderr


def test_an_output_that_cannot_be_written_is_a_plot_input_error_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for out, message in ((tmp_path / "eval.xyz", "cannot write 'xyz'; use one of"),
                         (blocker / "eval.png", f"cannot write ({blocker}: File exists)")):
        with pytest.raises(PlotInputError, match=re.escape(f"{out}: {message}")):
            check_out(str(out))
