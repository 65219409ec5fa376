"""The training methods of ``evpipe train --method`` on real N-MNIST samples.

Each method trains a small model (fold 0 of 10: 100 samples, few epochs, a narrow hidden layer, a
fixed decoder lead so the calibration is skipped) through ``pipeline.learn.train`` and the model
file runs in the exact core through the evaluation's real stages on samples it never saw. The
invariants of the constrained and binary networks are checked on the file, the binary units
against the core on real inputs, and the STDP learning loop against its plain reference.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kernels import lif
from pipeline.core.model import load_model, read_training
from pipeline.learn import binary, constrained, stdp
from pipeline.learn.classifier import Examples, TrainParams
from pipeline.learn.evaluate import evaluate
from pipeline.learn.features import FeatureSpec, extract, select, tile_columns
from pipeline.learn.train import train
from sensors.readers import open_reader
from sensors.replay import dataset_files
from tests.conftest import NMNIST_TRAIN, ROOT

METHODS = ("conversion", "constrained", "binary", "stdp")


def small(method: str) -> TrainParams:
    return TrainParams(method=method, hidden=64, prototype_samples=10, k=16)


@pytest.fixture(scope="module")
def split(recordings):
    """100 training samples (fold 0 of 10) and 30 others (3 per class) to test on."""
    files = select(NMNIST_TRAIN, 10, 0, test=True)
    others = select(NMNIST_TRAIN, 10, 1, test=True)
    return files, [f for i, f in enumerate(others) if i % 10 < 3]


@pytest.fixture(scope="module")
def models(split, tmp_path_factory):
    """Per method: (model path, training metadata), trained on the 100 samples."""
    folder = tmp_path_factory.mktemp("methods")
    out = {}
    for method in METHODS:
        path = folder / f"{method}.npz"
        out[method] = path, train(split[0], path, FeatureSpec(), small(method))
    return out


@pytest.fixture(scope="module")
def held_out(split, models):
    """The test samples as a binary model's examples (its prototypes, its classes)."""
    path, _ = models["binary"]
    with np.load(path) as archive:
        prototypes = archive["hots_prototypes"]
    inputs, labels = extract(split[1], FeatureSpec(), prototypes, desc="")
    classes = load_model(path).classes
    return Examples(inputs, np.array([classes.index(label) for label in labels]), classes,
                    FeatureSpec())


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_a_model_the_core_runs(models, split, method):
    path, training = models[method]
    model = load_model(path)
    assert training["params"]["method"] == method
    assert model.input == "features" and model.classes == tuple(str(c) for c in range(10))
    metrics = evaluate(path, split[1]).metrics
    assert metrics["n_samples"] == 30
    # 100 training samples: far from the full result, far above chance (0.1)
    assert metrics["accuracy_final"] >= 0.5, metrics["accuracy_final"]


def test_constrained_network_has_no_bias_clipped_rates_and_few_weight_levels(models, split):
    path, training = models["constrained"]
    model = load_model(path)
    assert model.n_layers == 2
    assert all(np.all(np.asarray(b) == 0) for b in model.biases)
    assert model.taus_us == (np.inf, np.inf) and model.resets == ("subtract", "subtract")
    assert all(np.all(np.asarray(t) == 1.0) for t in model.thresholds)
    for w in model.weights:  # 8-bit grid: at most 255 values, symmetric around 0
        values = np.unique(w)
        assert len(values) <= 2 ** constrained.BITS - 1
        step = np.min(np.diff(values))
        assert np.allclose(values / step, np.round(values / step), atol=1e-3)
    assert training["lambdas"][0] == constrained.RATE_LIMIT


def test_binary_weights_are_one_bit_and_the_if_layer_is_the_binary_unit(models, held_out):
    """Every hidden IF neuron fires once, at the very event at which the sample's input count
    through its {0, 1} weights reaches its threshold, and never if it does not; the output spike
    counts are the binary network's votes, event after event."""
    model = load_model(models["binary"][0])
    for w in model.weights:
        assert set(np.unique(w)) == {0.0, 1.0}
    thresholds = np.asarray(model.thresholds[0])
    assert np.all(thresholds >= 1) and np.all(thresholds == np.round(thresholds))
    assert model.refractory_us[0] == binary.REFRACTORY_US
    w1 = np.asarray(model.weights[0], np.float64)
    w2 = np.asarray(model.weights[1], np.float64)
    fired_somewhere = 0
    for idx in held_out.inputs:
        # sensor time stands in as 1 us per event: the refractory period outlasts the sample
        spikes = lif.run(model.net, lif.init_state(model.net), np.arange(len(idx)), idx)
        hidden = spikes["layer"] == 0
        # the running input of every hidden neuron, after each event
        running = np.cumsum(w1[idx], axis=0)
        crossed = running >= thresholds
        expected_neurons = np.flatnonzero(crossed[-1])
        first = np.argmax(crossed, axis=0)[expected_neurons]
        order = np.lexsort((expected_neurons, first))
        assert np.array_equal(spikes["neuron"][hidden], expected_neurons[order])
        assert np.array_equal(spikes["src"][hidden], first[order])
        counts = np.bincount(idx, minlength=w1.shape[0])[None, :]
        votes = binary.simulate(model, counts.astype(np.float64))[0]
        out = np.bincount(spikes["neuron"][~hidden], minlength=len(model.classes))
        assert np.array_equal(out, votes)
        assert np.array_equal(votes, (crossed[-1] @ w2))
        fired_somewhere += len(expected_neurons) > 0
    assert fired_somewhere == len(held_out.inputs)


def test_binary_samples_are_shorter_than_the_refractory_period(recordings):
    """The hidden layer fires at most once per sample only if no sample outlasts the refractory
    period: every N-MNIST sample here spans well under it."""
    for f in dataset_files(NMNIST_TRAIN)[::50]:
        events = np.concatenate(list(open_reader(f.path).chunks()))
        assert int(events["t"][-1]) - int(events["t"][0]) < binary.REFRACTORY_US / 2


def test_the_live_binary_network_lets_its_hidden_units_fire_again_after_the_leak(models, held_out):
    """On a stream (``leaky_network``, docs/snn.md "Live read-out") the hidden refractory
    period is cut to the leak's time constant: a sample shown twice, 300 ms apart (1 us per
    event), makes hidden spikes both times; with the model's own period (1 s) the second
    showing would find every unit that fired still refractory."""
    model = load_model(models["binary"][0])
    leak_us = 50_000.0
    net = model.leaky_network(leak_us)
    assert list(net.refractory) == [int(leak_us), 0]
    idx = held_out.inputs[0]
    times = np.concatenate([np.arange(len(idx)), 300_000 + np.arange(len(idx))])
    spikes = lif.run(net, lif.init_state(net), times, np.concatenate([idx, idx]))
    hidden = spikes["layer"] == 0
    first, second = (np.unique(spikes["neuron"][hidden & part]) for part in
                     (spikes["src"] < len(idx), spikes["src"] >= len(idx)))
    assert len(first) > 0 and len(np.intersect1d(first, second)) > 0


def test_stdp_kernel_equals_its_reference_on_nmnist(held_out):
    rng = np.random.default_rng(3)
    n_in = held_out.spec.n_inputs
    w = rng.uniform(0.0, 0.3, (n_in, 6))
    w *= stdp.WEIGHT_MEAN * n_in / w.sum(axis=0)
    ref_w, ref_theta = w.copy(), np.zeros(6)
    theta = np.zeros(6)
    total = 0
    for idx in held_out.inputs[:2]:
        part = idx[:1500]
        fast = stdp._learn_sample(part, w, theta, stdp.LEARN)
        slow = stdp.learn_sample_reference(part, ref_w, ref_theta)
        assert np.array_equal(fast, slow)
        np.testing.assert_allclose(w, ref_w, rtol=0, atol=1e-12)
        np.testing.assert_allclose(theta, ref_theta, rtol=0, atol=1e-12)
        total += len(fast)
    assert total > 10  # the comparison covers many weight updates
    assert len(set(np.concatenate([fast, slow]).tolist())) > 1  # and more than one winner


def test_stdp_feature_layer_is_zero_sum(models):
    """Layer 0 holds the STDP weights less each neuron's mean (zero-sum), scaled by 1 / lambda_0:
    every neuron has inputs of both signs and a flat input drives none."""
    path, training = models["stdp"]
    model = load_model(path)
    w = np.asarray(model.weights[0], np.float64)
    assert model.n_layers == 2 and w.shape[1] == 64
    scale = stdp.WEIGHT_MEAN / training["lambdas"][0]  # the mean weight before centring
    np.testing.assert_allclose(w.sum(axis=0) / w.shape[0], 0.0, atol=1e-6 * scale)
    assert np.all(w.max(axis=0) > 0) and np.all(w.min(axis=0) < 0)
    assert read_training(path)["lambdas"] == training["lambdas"]


def test_tile_counts_sum_their_cells_so_tile_weights_fold_into_the_cell_inputs(split):
    """Tile coding (``tile_columns``, 2 x 2 cells at the four cell shifts) on real samples (the
    shipped model's prototypes): each tile's count, as ``Examples.tile_rows`` computes it, is the
    sum of its cells' counts found by walking the cells, and a layer over the tiles equals the
    layer over the cells whose rows are the sums of the rows of the tiles holding each cell (what
    conversion stores)."""
    spec = FeatureSpec(cell=5)
    with np.load(ROOT / "recordings" / "model.npz") as archive:
        prototypes = archive["hots_prototypes"]
    inputs, _ = extract(split[1], spec, prototypes, desc="")
    examples = Examples(inputs, np.zeros(len(inputs), np.int64), ("0",), spec)
    nx, ny, n = -(-spec.width // spec.cell), -(-spec.height // spec.cell), spec.n_prototypes
    assert np.array_equal(tile_columns(spec, 1)[0], [np.arange(spec.n_inputs)])
    columns, n_columns = tile_columns(spec, 2)
    cells = examples.rows()[0].reshape(-1, ny, nx, n)
    tiles = examples.tile_rows(columns, n_columns)
    start = 0
    for oy in (0, 1):
        for ox in (0, 1):
            for ty in range((ny - 1 + oy) // 2 + 1):
                for tx in range((nx - 1 + ox) // 2 + 1):
                    ys = slice(max(2 * ty - oy, 0), 2 * ty - oy + 2)
                    xs = slice(max(2 * tx - ox, 0), 2 * tx - ox + 2)
                    np.testing.assert_allclose(tiles[:, start:start + n],
                                               cells[:, ys, xs].sum(axis=(1, 2)), atol=1e-12)
                    start += n
    assert start == n_columns
    np.testing.assert_allclose(tiles.sum(axis=1), 4.0)
    w = np.random.default_rng(0).normal(size=(n_columns, 10))
    np.testing.assert_allclose(examples.rows()[0] @ w[columns].sum(axis=0), tiles @ w,
                               atol=1e-9)


def test_tile_coded_conversion_keeps_one_input_per_cell_and_runs_in_the_core(split, tmp_path):
    """``--tile 2`` on 3-pixel cells: the model's first layer has one row per cell and
    prototype (the tile weights folded in), and it decides on samples it never saw."""
    path = tmp_path / "tiles.npz"
    train(split[0], path, FeatureSpec(cell=3), TrainParams(tile=2, prototype_samples=10, k=16))
    model = load_model(path)
    assert model.cell == 3 and model.weights[0].shape == (FeatureSpec(cell=3).n_inputs, 10)
    assert evaluate(path, split[1]).metrics["accuracy_final"] >= 0.5


@pytest.mark.parametrize("flags, message", [
    (("--method", "nope"), "--method: invalid choice: 'nope'"),
    (("--hidden", "-1"), "hidden must be >= 0 (0: the method's default), got -1"),
    (("--tile", "0"), "tile must be >= 1 (input cells per tile side), got 0"),
    (("--tile", "2", "--method", "stdp"),
     ("tile applies to the conversion method's softmax and mlp classifiers only, got tile 2 with "
      "method 'stdp' and classifier 'softmax'")),
    (("--tile", "2", "--classifier", "conv"),
     ("tile applies to the conversion method's softmax and mlp classifiers only, got tile 2 with "
      "method 'conversion' and classifier 'conv'")),
    (("--ensemble", "0"), "ensemble must be >= 1 (networks bagged), got 0"),
    (("--batch", "0"), "batch must be >= 1, got 0"),
    (("--denoise-us", "-1"), "denoise_us: expected an integer >= 1, got -1"),
    (("--ensemble", "3"), "ensemble applies to the conversion method's mlp classifier only, "
                          "got ensemble 3 with method 'conversion' and classifier 'softmax'")])
def test_bad_training_parameters_are_refused(tmp_path, flags, message):
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--data",
                           str(NMNIST_TRAIN), "--out", str(tmp_path / "m.npz"), *flags],
                          check=False, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m.npz").exists()


def test_unknown_method_is_refused_by_train(tmp_path):
    with pytest.raises(ValueError, match="unknown training method 'nope'; known: conversion"):
        train([], tmp_path / "m.npz", FeatureSpec(), TrainParams(method="nope"))


def test_an_unwritable_model_path_is_refused_before_training(tmp_path, caplog):
    from pipeline.cli.main import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["train", "--data", str(NMNIST_TRAIN), "--out", str(blocker / "m.npz")]) == 2
    assert f"{blocker / 'm.npz'}: cannot write ({blocker}: File exists)" in caplog.text
    assert main(["train", "--data", str(NMNIST_TRAIN), "--out", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a folder" in caplog.text
