"""Bagging of the conversion method's hidden layer (``--ensemble N``) on real N-MNIST samples.

The prefix rows of 60 training samples (fold 0 of 10, 6 per class; the shipped model's
prototypes) train small networks for few epochs; the joined network must be its members side by
side with logits their mean, each member trained on whole samples drawn with replacement, and a
model trained through ``evpipe``'s training flow must run in the exact core with one hidden
layer of N x width units. Bad ``--ensemble`` values are refused in tests/learn/test_methods.py
with the other training flags.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.core.model import load_model
from pipeline.learn.classifier import Examples, TrainParams, bagged, fit
from pipeline.learn.convert import ann_logits
from pipeline.learn.evaluate import evaluate
from pipeline.learn.features import FeatureSpec, extract, select
from pipeline.learn.train import train
from tests.conftest import NMNIST_TRAIN, ROOT

BAGGED = TrainParams(classifier="mlp", hidden=8, epochs=3, ensemble=3, seed=5)


@pytest.fixture(scope="module")
def samples(recordings):
    """60 training samples (6 per class) and 30 others (3 per class) as files."""
    files = select(NMNIST_TRAIN, 10, 0, test=True)
    others = select(NMNIST_TRAIN, 10, 1, test=True)
    return ([f for i, f in enumerate(files) if i % 10 < 6],
            [f for i, f in enumerate(others) if i % 10 < 3])


@pytest.fixture(scope="module")
def examples(samples):
    spec = FeatureSpec()
    with np.load(ROOT / "recordings" / "model.npz") as archive:
        prototypes = archive["hots_prototypes"]
    inputs, labels = extract(samples[0], spec, prototypes, desc="")
    classes = sorted(set(labels))
    return Examples(inputs, np.array([classes.index(label) for label in labels]),
                    tuple(classes), spec)


def test_the_joined_network_averages_its_members_logits(examples):
    """N x width hidden units; split back into its N blocks, each block (output rows times N) is
    a network of its own, the blocks differ, and the joined logits are their mean."""
    x, y = examples.rows()
    w1, w2 = bagged(x, y, len(examples.inputs), 10, BAGGED)
    assert w1.shape == (examples.spec.n_inputs, 24) and w2.shape == (24, 10)
    blocks = [[w1[:, i * 8:(i + 1) * 8], w2[i * 8:(i + 1) * 8] * 3] for i in range(3)]
    members = [ann_logits(block, x) for block in blocks]
    np.testing.assert_allclose(ann_logits([w1, w2], x), np.mean(members, axis=0), atol=1e-9)
    assert not np.allclose(blocks[0][0], blocks[1][0])
    assert not np.allclose(members[1], members[2])


def test_each_member_is_fitted_on_whole_samples_drawn_with_replacement(examples):
    """Member i is ``fit`` with seed ``seed + 1 + i`` on every prefix row of a bootstrap draw of
    the samples (the rows are fraction-major): refitted from the draw it matches its block, and
    ``fit`` on row indices (repeats allowed) equals ``fit`` on those rows copied out."""
    x, y = examples.rows()
    n = len(examples.inputs)
    w1, w2 = bagged(x, y, n, 10, BAGGED)
    rng = np.random.default_rng(BAGGED.seed)
    for i in range(3):
        drawn = rng.integers(0, n, n)
        assert len(set(drawn)) < n  # with replacement: some samples twice, some never
        rows = np.concatenate([drawn + j * n for j in range(len(x) // n)])
        member = fit(x, y, 10, replace(BAGGED, seed=BAGGED.seed + 1 + i), rows=rows)
        np.testing.assert_allclose(member[0], w1[:, i * 8:(i + 1) * 8], atol=1e-12)
        np.testing.assert_allclose(member[1] / 3, w2[i * 8:(i + 1) * 8], atol=1e-12)
    copied = fit(x[rows], y[rows], 10, BAGGED)
    indexed = fit(x, y, 10, BAGGED, rows=rows)
    for a, b in zip(copied, indexed):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_a_bagged_model_is_one_hidden_layer_in_the_exact_core(samples, tmp_path):
    """``train`` with ensemble 2 of 16 units: the model file has one hidden layer of 32 IF
    neurons and decides on samples it never saw."""
    path = tmp_path / "bagged.npz"
    train(samples[0], path, FeatureSpec(), TrainParams(
        classifier="mlp", hidden=16, ensemble=2, epochs=20, prototype_samples=10, k=16))
    model = load_model(path)
    assert [w.shape for w in model.weights] == [(FeatureSpec().n_inputs, 32), (32, 10)]
    assert evaluate(path, samples[1]).metrics["accuracy_final"] >= 0.5
