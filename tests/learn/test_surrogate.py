"""Surrogate-gradient training (pipeline/learn/surrogate.py) on a small real N-MNIST subset: the
model it writes is one the exact core runs, and the clock-driven and exact accuracies and their
gap are measured."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kernels import lif
from pipeline.core.model import load_model
from pipeline.learn.classifier import Examples, TrainParams
from pipeline.learn.features import FeatureSpec, extract, learn_prototypes, select
from pipeline.learn.surrogate import (
    FINE_TUNE,
    VALIDATION_SHARE,
    Sample,
    SurrogateParams,
    _spike_function,
    decide,
    exact_accuracy,
    fit,
    load_samples,
    mean_loss,
    train,
    validation_mask,
)
from tests.conftest import NMNIST_TRAIN


def test_training_on_a_real_subset_gives_a_model_the_core_runs(tmp_path):
    files = select(NMNIST_TRAIN, 5, 0, test=False)[::20]  # 40 samples, every class
    held_out = select(NMNIST_TRAIN, 5, 0, test=True)[::20]  # 10 samples
    params = SurrogateParams(hidden=32, epochs=3, batch=20, threads=1)
    record = train(files, str(tmp_path / "s.npz"), params, held_out)

    assert record["losses"][-1] < record["losses"][0]
    model = load_model(tmp_path / "s.npz")
    assert [np.shape(w) for w in model.weights] == [(2312, 32), (32, 10)]
    assert model.input == "events" and model.resets == ("subtract", "subtract")
    assert json.loads(str(np.load(tmp_path / "s.npz")["training"]))["method"] == "surrogate"

    # the exact core runs the written model: output spikes on the held-out samples, and the
    # accuracy stored is the one the core gives
    samples = load_samples(held_out, record["classes"])
    state = lif.init_state(model.net, int(samples[0].t[0]))
    spikes = lif.run(model.net, state, samples[0].t, samples[0].idx)
    assert np.any(spikes["layer"] == 1)
    exact, decisions = exact_accuracy(model, samples)
    assert exact == record["test"]["accuracy_exact"] and len(decisions) == len(samples)
    for part in ("train", "test"):
        scored = record[part]
        assert 0 <= scored["accuracy_clock"] <= 1 and 0 <= scored["accuracy_exact"] <= 1
        assert scored["gap"] == round(scored["accuracy_clock"] - scored["accuracy_exact"], 4)
    assert record["train"]["accuracy_clock"] > 0.2  # above chance (0.1) after three epochs


def test_decisions_follow_the_decoders_forced_rule():
    counts = np.array([[3, 5, 5], [0, 0, 0], [2, 1, 0]])
    potentials = np.array([[0.0, 0.2, 0.7], [0.1, 0.1, 0.0], [-1.0, 0.9, 0.9]])
    assert decide(counts, potentials).tolist() == [2, 0, 0]


def test_method_surrogate_fine_tunes_the_converted_network_and_keeps_the_best_epoch():
    """``evpipe train --method surrogate``'s fit on the HOTS feature spikes of 50 real samples:
    two IF layers over the feature mapping, the epoch kept the one with the lowest prefix loss on
    the held-out samples, and the exact core right where the clock-driven simulation is."""
    files = select(NMNIST_TRAIN, 5, 0, test=False)[::16]
    spec = FeatureSpec()
    inputs, labels = extract(files, spec, learn_prototypes(files, spec, 5, 0), desc="")
    classes = sorted(set(labels))
    examples = Examples(inputs, np.array([classes.index(y) for y in labels]), tuple(classes), spec)
    trained = fit(examples, TrainParams(method="surrogate", hidden=16, epochs=20))
    model, info = trained.model, trained.info
    assert model.input == "features" and model.taus_us == (math.inf, math.inf)
    assert [np.shape(w) for w in model.weights] == [(spec.n_inputs, 16), (16, len(classes))]
    assert len(info["losses"]) == FINE_TUNE["epochs"]
    assert len(info["validation_losses"]) == FINE_TUNE["epochs"] + 1  # epoch 0: converted
    assert info["epoch"] == int(np.argmin(info["validation_losses"]))

    held = validation_mask(examples.y, VALIDATION_SHARE, 0)
    assert info["n_validation"] == held.sum() == len(classes)  # one per class of about 5
    validation = [Sample(np.arange(len(inputs[i])), inputs[i], examples.y[i])
                  for i in np.flatnonzero(held)]
    torch = pytest.importorskip("torch")
    sp = SurrogateParams(**{**info["surrogate"], "tau_us": math.inf})
    weights = [torch.from_numpy(np.asarray(w)) for w in model.weights]
    kept = mean_loss(torch, _spike_function(torch, sp.slope), validation, weights, sp)
    assert kept == pytest.approx(min(info["validation_losses"]), abs=1e-4)

    tuned = [Sample(np.arange(len(inputs[i])), inputs[i], examples.y[i])
             for i in np.flatnonzero(~held)]
    exact, _ = exact_accuracy(model, tuned)
    assert info["train_accuracy_ann"] >= 0.9 and abs(exact - info["train_accuracy_ann"]) <= 0.05


def test_validation_mask_holds_out_a_share_of_every_class():
    y = np.repeat(np.arange(3), [10, 20, 4])
    held = validation_mask(y, 0.1, 0)
    assert [int(held[y == c].sum()) for c in range(3)] == [1, 2, 1]
    assert np.array_equal(held, validation_mask(y, 0.1, 0))
    assert not np.array_equal(held, validation_mask(y, 0.1, 1))
