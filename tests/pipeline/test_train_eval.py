"""Training, conversion and evaluation on real N-MNIST samples.

A small real training run (100 samples of the N-MNIST training folder, fewer epochs) stands
in for the full one; the shipped model (recordings/model.npz, trained on all 1000) is checked
against the multi-process graph of config.toml.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from pipeline.core.model import load_model, read_training
from pipeline.learn.convert import ann_activations, ann_logits, normalise
from pipeline.learn.evaluate import FRACTIONS, evaluate
from pipeline.learn.features import FeatureSpec, extract, feature_matrix, folds, select
from pipeline.learn.train import TrainParams, train
from sensors.replay import dataset_files
from tests.conftest import NMNIST_TRAIN, ROOT

SHIPPED = ROOT / "recordings" / "model.npz"
BUNDLED = ROOT / "recordings" / "nmnist"
KEYS = {"n_samples", "accuracy_final", "accuracy_early", "early_rate", "median_event_fraction",
        "median_decision_us", "accuracy_ann", "confusion", "curve"}
SMALL = TrainParams(epochs=25, prototype_samples=30)


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


def test_small_training_run_writes_a_loadable_model(small_model):
    path, training, files = small_model
    model = load_model(path)
    assert model.classes == tuple(str(d) for d in range(10))
    assert model.input == "features" and model.channels == 64 and model.cell == 6
    assert model.weights[0].shape == (FeatureSpec().n_inputs, 10)
    assert read_training(path) == training
    assert training["n_samples"] == len(files) == 100
    assert training["train_accuracy_ann"] >= 0.9
    assert training["decoder"]["k"] in [int(k) for k in training["calibration"]]
    with np.load(path) as archive:
        assert archive["hots_prototypes"].shape == (2 * 5 * 5, 64)
    assert path.stat().st_size < 5e6


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
        _, high = normalise(weights, x, percentile=99.0)
        assert all(h <= l for h, l in zip(high, lambdas))


def test_converted_snn_agrees_with_the_ann(small_model):
    path, _, train_files = small_model
    held = select(NMNIST_TRAIN, 10, 1, test=True)[::2]  # 50 samples not trained on
    result = evaluate(path, held, desc="")
    s = result.streamed
    snn_final = np.array(s.snn)[:, -1]
    ann_final = np.array(s.ann)[:, -1]
    assert np.mean(snn_final == ann_final) >= 0.9
    finals = {r["segment"]: r["class"] for r in result.finals}
    assert np.mean([finals[i] == a for i, a in enumerate(ann_final)]) >= 0.9
    m = result.metrics
    assert m["accuracy_ann"] >= 0.7 and m["accuracy_final"] >= 0.7
    assert abs(m["accuracy_ann"] - m["accuracy_final"]) <= 0.1


def test_eval_command_writes_the_issue_keys(small_model, tmp_path):
    path, _, _ = small_model
    out, png = tmp_path / "eval.json", tmp_path / "curve.png"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "eval", "--model", str(path),
                           "--data", str(BUNDLED), "--json", str(out), "--plot", str(png)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert set(result) == KEYS
    assert result["n_samples"] == 20
    for key in ("accuracy_final", "accuracy_early", "early_rate", "median_event_fraction",
                "accuracy_ann"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["accuracy_early"] <= result["early_rate"]
    assert 0 < result["median_decision_us"] < 400_000  # N-MNIST samples last about 300 ms
    confusion = np.array(result["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 20
    assert np.trace(confusion) / 20 == pytest.approx(result["accuracy_final"])
    curve = result["curve"]
    assert curve["fraction"] == list(FRACTIONS)
    assert all(len(v) == len(FRACTIONS) for v in curve.values())
    assert curve["snn"][-1] == pytest.approx(result["accuracy_final"], abs=0.1)
    assert curve["ann"][-1] == result["accuracy_ann"]
    assert np.all(np.diff(curve["early_decided"]) >= 0)
    assert curve["early_decided"][-1] == result["early_rate"]
    assert curve["early_right"][-1] == result["accuracy_early"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"accuracy_final {result['accuracy_final']:.4g}" in done.stdout


def test_shipped_model_eval_decisions_equal_the_multiprocess_graph(tmp_path):
    """`evpipe eval` and `evpipe run` (config.toml, one process per node, ZeroMQ ipc links)
    take the same decisions on the 20 bundled samples."""
    text = (ROOT / "config.toml").read_text()
    text = re.sub(r'(?m)^runner = .*$', 'runner = "processes"', text)
    text = re.sub(r'(?m)^path = "out/demo.jsonl"', f'path = "{tmp_path / "run.jsonl"}"', text)
    assert f'"{tmp_path / "run.jsonl"}"' in text
    config = tmp_path / "config.toml"
    config.write_text(text.replace('"recordings/', f'"{ROOT / "recordings"}/'))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    ran = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    evaluated = evaluate(SHIPPED, dataset_files(BUNDLED), desc="").decisions
    ignore = {"stream", "decoder_ns", "latency_ns"}  # stream: the graph names it after the node
    strip = lambda records: [{k: v for k, v in r.items() if k not in ignore} for r in records]
    assert len(ran) >= 20 and {r["segment"] for r in ran} == set(range(20))
    assert strip(ran) == strip(evaluated)
    assert sum(r["class_name"] == r["label"] for r in ran) >= 18
