"""The live read-out scored on marker-free streams of the bundled N-MNIST samples
(pipeline/learn/continuous.py), against the marker mode on the same samples."""

from __future__ import annotations

import pytest

from pipeline.learn.continuous import LEAD_FRACTIONS, as_one_packet, calibrate_live, decide, \
    evaluate_continuous, features_of, make_stream, score, spikes_of
from pipeline.learn.evaluate import evaluate
from sensors.continuous import concatenate
from sensors.replay import SegmentFile, dataset_files
from tests.conftest import ROOT

MODEL = ROOT / "recordings" / "model.npz"
SURROGATE = ROOT / "recordings" / "models" / "surrogate.npz"
BUNDLED = ROOT / "recordings" / "nmnist"


@pytest.fixture(scope="module")
def marker_accuracy():
    return evaluate(MODEL, dataset_files(BUNDLED)).metrics["accuracy_early"]


@pytest.mark.parametrize("gap_ms,noise", [(0, 0.0), (100, 0.0), (300, 0.0), (0, 2000.0), (300, 2000.0)])
def test_every_object_decided_once(gap_ms, noise, marker_accuracy):
    result = evaluate_continuous(MODEL, dataset_files(BUNDLED), gap_ms * 1000, noise)
    assert result["objects"] == result["found"] == 20
    assert result["decided_once"] == 1.0 and result["extra_decisions"] == 0
    assert result["abstentions"] == 0
    assert result["accuracy_first"] >= marker_accuracy - 0.05
    # decided early: well before the object's 300 ms are over, on a minority of its events
    assert result["median_delay_ms"] < 100 and result["median_event_share"] < 0.5


def test_packet_cut_does_not_change_decisions():
    """Calibration feeds the decoder all spikes at once; the 1 ms packets of a live run decide
    exactly the same."""
    stream = make_stream(dataset_files(BUNDLED)[:8], gap_us=100_000, noise_rate=2000.0)
    spikes = spikes_of(MODEL, features_of(MODEL, stream))
    per_packet = decide(MODEL, spikes)
    at_once = decide(MODEL, as_one_packet(spikes))
    keys = ("segment", "class", "rule", "t", "t_start", "events", "score", "margin")
    assert [[r[k] for k in keys] for r in per_packet] == [[r[k] for k in keys] for r in at_once]
    assert score(per_packet, stream)["found"] == 8


def test_objects_shown_back_to_back_with_the_same_class_are_one():
    """The documented limit of the rule: two recordings of one class with no gap between them
    look like one object; with a gap longer than quiet_us they are two."""
    same = [f for f in dataset_files(BUNDLED) if f.label == "3"]
    assert len(same) == 2
    joined = make_stream(same, gap_us=0, seed=0)
    assert len(decide(MODEL, spikes_of(MODEL, features_of(MODEL, joined)))) == 1
    apart = make_stream(same, gap_us=300_000, seed=0)
    assert len(decide(MODEL, spikes_of(MODEL, features_of(MODEL, apart)))) == 2


def test_live_leads_are_scaled_to_the_output_rate_of_the_network():
    """The surrogate network fires about ten times fewer output spikes than the converted one;
    calibration offers it leads as much smaller, and its live read-out then decides the objects
    once and right as the converted one's does."""
    files = dataset_files(BUNDLED)[::2]
    converted, surrogate = calibrate_live(MODEL, files), calibrate_live(SURROGATE, files)
    rate = [min(row["spikes"] for row in c["spikes_per_object"]) for c in (converted, surrogate)]
    assert rate[1] < rate[0] / 4
    for key in ("k", "k_change"):  # the leads offered, with the 30 ms leak
        offered = [sorted({row[key] for row in c["table"] if row["leak_tau_us"] == 30_000.0})
                   for c in (converted, surrogate)]
        assert len(offered[1]) == len(offered[0]) == len(LEAD_FRACTIONS[key])
        assert all(mine <= theirs / 4 for theirs, mine in zip(*offered))
    for calibration in (converted, surrogate):  # the chosen setting is the table's best
        assert max(row["right_once"] for row in calibration["table"]) >= 0.8


def test_an_unreadable_recording_is_left_out_of_the_stream_as_a_replay_skips_it(tmp_path):
    good = dataset_files(BUNDLED)[:2]
    broken = tmp_path / "broken.bin"
    broken.write_bytes(b"\x00" * 7)  # not a whole 5-byte N-MNIST record
    _, shown, _, _ = concatenate([good[0], SegmentFile(str(broken), "1"), good[1]], 1000)
    assert [s.path for s in shown] == [good[0].path, good[1].path]


@pytest.mark.parametrize("flags, message", [
    (["--cross-validate", "1"], "--cross-validate K needs K >= 2 folds"),
    (["--continuous", "--noise", "nan"], "--gap-ms and --noise must be >= 0, got 300 and nan"),
])
def test_eval_refuses_one_fold_and_a_nan_noise_rate(flags, message, caplog):
    from pipeline.cli.main import main

    assert main(["eval", "--model", str(MODEL), "--data", str(BUNDLED), *flags]) == 2
    assert message in caplog.text
