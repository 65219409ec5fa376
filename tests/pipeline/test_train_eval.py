"""Training, conversion and evaluation on real N-MNIST samples.

A small real training run (fold 0 of 10 of the N-MNIST training folder: 100 samples, fewer
epochs) stands in for the full one and is judged on samples it never saw; the shipped model
(recordings/model.npz, trained on all 1000) is checked against the multi-process graph of
config.toml. Dataset folders without class subfolders are refused before any work is done.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from pipeline.core.model import load_model, read_training
from pipeline.learn.convert import ann_activations, ann_logits, normalise
from pipeline.learn.evaluate import FINAL_RULES, FRACTIONS, evaluate
from pipeline.learn.features import (
    FeatureSpec,
    extract,
    feature_matrix,
    folds,
    learn_prototypes,
    readable_inputs,
    select,
)
from pipeline.learn.train import TrainParams, smallest_k, train
from sensors.replay import SegmentFile, dataset_files
from tests.conftest import NMNIST_TRAIN, ROOT
from tests.sinks.helpers import demo_config, nmnist_subset

SHIPPED = ROOT / "recordings" / "model.npz"
BUNDLED = ROOT / "recordings" / "nmnist"
KEYS = {"n_samples", "accuracy_final", "accuracy_early", "early_rate", "median_event_fraction",
        "median_decision_us", "accuracy_ann", "confusion", "curve"}
SMALL = TrainParams(epochs=25, prototype_samples=30)
LAYOUT = "a dataset is a folder with one subfolder per class"


def evpipe(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, recordings):
    """A model trained on fold 0 of 10 (100 samples), with its training files."""
    files = select(NMNIST_TRAIN, 10, 0, test=True)
    path = tmp_path_factory.mktemp("model") / "small.npz"
    training = train(files, path, FeatureSpec(), SMALL)
    return path, training, files


def test_folds_are_stratified_disjoint_and_seeded(recordings):
    files = dataset_files(NMNIST_TRAIN)
    fold = folds(files, 5, seed=0)
    assert np.array_equal(fold, folds(files, 5, seed=0))
    assert not np.array_equal(fold, folds(files, 5, seed=1))
    assert np.bincount(fold).tolist() == [200] * 5
    per_class = Counter(f.label for f in files)
    for k in range(5):
        test = select(NMNIST_TRAIN, 5, k, test=True)
        train_files = select(NMNIST_TRAIN, 5, k, test=False)
        assert len(test) + len(train_files) == len(files)
        assert not {f.path for f in test} & {f.path for f in train_files}
        counts = Counter(f.label for f in test)
        assert all(abs(counts[c] - n / 5) <= 1 for c, n in per_class.items())


def test_a_training_share_keeps_that_share_of_each_class_of_the_training_folds(recordings):
    """The points of a learning curve: each class's share of the training files, seeded, a
    smaller share's files among a larger one's, the held-out fold untouched."""
    training = select(NMNIST_TRAIN, 5, 0, test=False)
    per_class = Counter(f.label for f in training)
    chosen = {share: select(NMNIST_TRAIN, 5, 0, test=False, share=share) for share in (0.25, 0.5)}
    for share, files in chosen.items():
        assert Counter(f.label for f in files) == {c: round(share * n) for c, n in per_class.items()}
        assert {f.path for f in files} <= {f.path for f in training}
        assert files == select(NMNIST_TRAIN, 5, 0, test=False, share=share)
    assert {f.path for f in chosen[0.25]} < {f.path for f in chosen[0.5]}
    assert chosen[0.5] != select(NMNIST_TRAIN, 5, 0, test=False, seed=1, share=0.5)
    assert select(NMNIST_TRAIN, 5, 0, test=True, share=0.5) == select(NMNIST_TRAIN, 5, 0)


@pytest.mark.parametrize("flags, message", [
    (["--cross-validate", "2", "--train-share", "0"],
     "the training share (--train-share) must be in (0, 1], got 0.0"),
    (["--train-share", "0.5"],
     "--train-share picks training files: it applies to --cross-validate only")])
def test_a_training_share_out_of_range_or_without_training_is_refused_by_name(flags, message):
    done = evpipe("eval", "--data", BUNDLED, *flags)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr


def test_small_training_run_writes_the_model_it_trained(small_model):
    """The file holds the prototypes the HOTS stage learns on the seeded subset, and its recorded
    training accuracy is what the saved weights score on the training features."""
    path, training, files = small_model
    model = load_model(path)
    assert model.classes == tuple(str(d) for d in range(10))
    assert model.input == "features" and model.channels == 64 and model.cell == 6
    assert read_training(path) == training
    assert training["n_samples"] == len(files) == 100
    assert training["decoder"]["k"] in [int(k) for k in training["calibration"]]
    spec = FeatureSpec()
    with np.load(path) as archive:
        saved = archive["hots_prototypes"]
    learnt = learn_prototypes(files, spec, SMALL.prototype_samples, SMALL.seed)
    np.testing.assert_array_equal(saved, learnt.astype(np.float32))
    inputs, labels = extract(files, spec, learnt, desc="")
    whole = feature_matrix(inputs, spec.n_inputs, fractions=(1.0,))
    predicted = np.argmax(ann_logits([w.astype(np.float64) for w in model.weights], whole), axis=1)
    truth = np.array([model.classes.index(label) for label in labels])
    assert training["train_accuracy_ann"] == np.mean(predicted == truth)
    assert path.stat().st_size < 5e6


def test_calibration_keeps_the_smallest_k_within_one_held_out_sample_of_the_best(small_model):
    """The decoder's lead is the smallest k whose early accuracy on the held-out fifth (20 of the
    100 samples) is at most one sample below the best k's; a larger k only decides later."""
    _, training, files = small_model
    table = {int(k): row["accuracy_early"] for k, row in training["calibration"].items()}
    held = len(files) // 5
    best = max(table.values())
    chosen = training["decoder"]["k"]
    assert table[chosen] >= best - 1 / held - 1e-12
    assert all(table[k] < best - 1 / held - 1e-12 for k in table if k < chosen)
    assert smallest_k({k: {"accuracy_early": a} for k, a in table.items()}, 0.0) == min(
        k for k, a in table.items() if a == best)


def test_a_negative_k_slack_is_refused_by_name(tmp_path):
    done = evpipe("train", "--data", BUNDLED, "--out", tmp_path / "m.npz", "--k-slack", "-1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "k_slack must be >= 0 (held-out samples), got -1" in done.stderr
    assert not (tmp_path / "m.npz").exists()


def test_an_unreadable_recording_is_dropped_with_its_label_and_the_rest_stay_aligned(tmp_path):
    files = dataset_files(BUNDLED)
    with np.load(SHIPPED) as archive:
        prototypes = archive["hots_prototypes"].astype(np.float64)
    broken = tmp_path / "1" / "broken.bin"
    broken.parent.mkdir()
    broken.write_bytes(b"\x00" * 7)  # not a whole 5-byte N-MNIST record
    given = [files[0], SegmentFile(str(broken), "1"), files[-1]]
    kept, inputs, labels = readable_inputs(given, FeatureSpec(), prototypes, desc="")
    assert kept == [files[0], files[-1]]
    assert labels == [files[0].label, files[-1].label] and len(inputs) == 2


def test_normalisation_scales_layers_to_max_one_and_keeps_the_decisions(small_model):
    path, _, files = small_model
    spec = FeatureSpec()
    with np.load(path) as archive:
        prototypes = archive["hots_prototypes"].astype(np.float64)
    inputs, _ = extract(files[:30], spec, prototypes, desc="")
    x = feature_matrix(inputs, spec.n_inputs)
    rng = np.random.default_rng(0)
    for sizes in ([spec.n_inputs, 10], [spec.n_inputs, 32, 10]):
        weights = [rng.normal(0, 1, (a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
        scaled, lambdas = normalise(weights, x)
        for a in ann_activations(scaled, x):
            assert a.max() == pytest.approx(1.0)
        assert np.array_equal(np.argmax(ann_logits(scaled, x), 1),
                              np.argmax(ann_logits(weights, x), 1))
        # percentile normalisation: lambda_l is that percentile of layer l's positive
        # activations in the unscaled network (Rueckauer et al. 2017)
        _, high = normalise(weights, x, percentile=99.0)
        expected = [np.percentile(a[a > 0], 99.0) for a in ann_activations(weights, x)]
        assert high == pytest.approx(expected, rel=1e-12)
        assert high[0] < lambdas[0]


def test_converted_snn_agrees_with_the_ann_on_held_out_samples(small_model):
    """200 samples the model never saw (folds 1 and 2). Measured: the SNN's final spike-count
    leader is the ANN's class on 93 %, and both are right on about 92 % (chance: 10 %)."""
    path, _, train_files = small_model
    held = select(NMNIST_TRAIN, 10, 1, test=True) + select(NMNIST_TRAIN, 10, 2, test=True)
    assert not {f.path for f in held} & {f.path for f in train_files}
    result = evaluate(path, held, desc="")
    s = result.streamed
    snn_final = np.array(s.snn)[:, -1]
    ann_final = np.array(s.ann)[:, -1]
    assert np.mean(snn_final == ann_final) >= 0.85
    m = result.metrics
    assert m["accuracy_ann"] >= 0.8 and m["accuracy_final"] >= 0.8
    assert abs(m["accuracy_ann"] - m["accuracy_final"]) <= 0.05


def first_decisions(records: list[dict], n: int, early: bool) -> list[dict | None]:
    """Per segment: its first early decision (rule not final), or its last decision."""
    chosen: list[dict | None] = [None] * n
    for r in records:
        if early and r["rule"] not in FINAL_RULES:
            chosen[r["segment"]] = chosen[r["segment"]] or r
        elif not early:
            chosen[r["segment"]] = r
    return chosen


def test_eval_command_writes_the_metrics_of_its_decisions(small_model, tmp_path):
    """`evpipe eval` on the 20 bundled samples writes the metrics an in-process evaluation gives,
    and each metric is what the decision records themselves say (counted here, independently)."""
    path, _, _ = small_model
    out, png = tmp_path / "eval" / "eval.json", tmp_path / "curve.png"
    done = evpipe("eval", "--model", path, "--data", BUNDLED, "--json", out, "--plot", png)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert set(result) == KEYS
    evaluation = evaluate(path, dataset_files(BUNDLED), desc="")
    assert result == json.loads(json.dumps(evaluation.metrics))
    labels = evaluation.streamed.labels
    assert labels == [str(d) for d in range(10) for _ in range(2)]  # the bundled layout
    n = result["n_samples"]
    assert n == 20
    finals = first_decisions(evaluation.finals, n, early=False)
    early = first_decisions(evaluation.decisions, n, early=True)
    first = [e or f for e, f in zip(early, finals)]
    assert result["accuracy_final"] == np.mean([f["class_name"] == y for f, y in zip(finals, labels)])
    assert result["early_rate"] == np.mean([e is not None for e in early])
    assert result["accuracy_early"] == np.mean([e is not None and e["class_name"] == y
                                                for e, y in zip(early, labels)])
    assert result["median_decision_us"] == np.median([d["t"] - d["t_start"] for d in first])
    assert result["median_event_fraction"] == np.median(
        [e["events"] / total if e else 1.0 for e, total in zip(early, evaluation.streamed.events)])
    confusion = np.zeros((10, 10), int)
    for f, y in zip(finals, labels):
        confusion[int(y), f["class"]] += 1
    assert result["confusion"] == confusion.tolist()
    curve = result["curve"]
    assert curve["fraction"] == list(FRACTIONS)
    assert curve["early_decided"][-1] == result["early_rate"]
    assert curve["early_right"][-1] == result["accuracy_early"]
    # the early decision of a sample counts from the fraction of its events it came after
    for i, f in enumerate(FRACTIONS):
        decided = [e is not None and e["events"] <= math.ceil(f * total)
                   for e, total in zip(early, evaluation.streamed.events)]
        assert curve["early_decided"][i] == np.mean(decided)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"accuracy_final {result['accuracy_final']:.4g}" in done.stdout


def test_shipped_model_eval_decisions_equal_the_multiprocess_graph(tmp_path):
    """`evpipe eval` and `evpipe run` (config.toml, worker processes, a ZeroMQ ipc link)
    take the same decisions on the 20 bundled samples; eval's default model is the shipped one."""
    config = demo_config(tmp_path, name=f"eval-{tmp_path.name}", runner="processes")
    done = evpipe("run", config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ran = [json.loads(line) for line in (tmp_path / "demo.jsonl").read_text().splitlines()]
    evaluated = evaluate(SHIPPED, dataset_files(BUNDLED), desc="").decisions
    # stream: the graph names it after the node; *_ns: host timings
    strip = lambda records: [{k: v for k, v in r.items() if k != "stream" and not k.endswith("_ns")}
                             for r in records]
    assert [r["segment"] for r in ran] == list(range(20))
    assert strip(ran) == strip(evaluated)
    default = evpipe("eval", "--data", BUNDLED, "--json", tmp_path / "shipped.json")
    assert default.returncode == 0, default.stderr
    metrics = json.loads((tmp_path / "shipped.json").read_text())
    early = first_decisions(ran, 20, early=True)
    assert metrics["early_rate"] == np.mean([e is not None for e in early])
    assert metrics["accuracy_early"] == np.mean([e is not None and e["class_name"] == e["label"]
                                                 for e in early])


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory):
    """Four N-MNIST recordings side by side, with no class subfolders."""
    folder = tmp_path_factory.mktemp("flat")
    for sample in sorted((BUNDLED / "3").glob("*.bin")) + sorted((BUNDLED / "7").glob("*.bin")):
        (folder / sample.name).symlink_to(sample)
    return folder


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_folder_without_class_subfolders_is_refused_by_name(flat_folder, tmp_path, command):
    out = tmp_path / "model.npz"
    done = evpipe(command, "--data", flat_folder, *(["--out", out] if command == "train" else []))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{flat_folder} holds 4 recording(s) but no class subfolders; {LAYOUT}" in done.stderr
    assert not out.exists()


def test_train_needs_two_classes_and_eval_the_model_classes(tmp_path):
    one = tmp_path / "one" / "3"
    one.mkdir(parents=True)
    for sample in sorted((BUNDLED / "3").glob("*.bin")):
        (one / sample.name).symlink_to(sample)
    done = evpipe("train", "--data", one.parent, "--out", tmp_path / "model.npz")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "training needs recordings of at least two classes, got ['3']" in done.stderr
    animals, _ = nmnist_subset(tmp_path / "animals", per_class=1)
    for digit, name in ((str(d), f"animal{d}") for d in range(10)):
        (animals / digit).rename(animals / name)
    done = evpipe("eval", "--data", animals)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "class folders ['animal0', 'animal1'," in done.stderr and "are not classes of the model" in done.stderr
    missing = evpipe("eval", "--data", BUNDLED, "--model", tmp_path / "nothere.npz")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"{tmp_path / 'nothere.npz'}: not a readable .npz model" in missing.stderr
