"""Training: time-surface features -> numpy classifier -> converted SNN model file.

1. HOTS prototypes learnt online on a seeded subset of the training samples, then frozen
   (``pipeline.learn.features``); every sample streamed through the denoise and hots stages.
2. Prefix training: every sample contributes its feature vector after 15, 30, 50 and 100 % of its
   feature events, so the classifier is right on early evidence (docs/training.md).
3. A bias-free classifier trained with Adam (Kingma and Ba 2015) on softmax cross-entropy with L2
   weight decay: softmax regression, or one hidden ReLU layer. No biases, so the SNN (which has
   none) computes the same function up to positive scaling.
4. Conversion with data-based normalisation (``pipeline.learn.convert``).
5. The decoder's spike lead ``k`` calibrated on a held-out fifth of the training samples: a model
   trained on the other four fifths is streamed through the real snn and decoder stages, and the
   ``k`` with the best early accuracy (abstentions count as wrong; ties: smaller k) is kept.
6. The model trained on all training samples is saved with its prototypes and, under
   ``training``, a JSON string: feature parameters, decoder parameters, normalisation factors and
   training statistics.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from pipeline.core.files import make_parent
from pipeline.core.model import LIVE_DEFAULTS
from pipeline.learn.cluster import Runner
from pipeline.learn.convert import ann_logits, normalise, to_snn
from pipeline.learn.continuous import calibrate_live
from pipeline.learn.evaluate import evaluate
from pipeline.learn.features import (
    PREFIXES,
    DatasetError,
    FeatureSpec,
    extract,
    feature_matrix,
    folds,
    learn_prototypes,
)
from sensors.replay import SegmentFile

CLASSIFIERS = ("softmax", "mlp")
K_CANDIDATES = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclass(frozen=True)
class TrainParams:
    """classifier: "softmax" or "mlp" (one hidden ReLU layer of ``hidden`` units); epochs, batch,
    lr (Adam step), l2 (weight decay): the optimiser; percentile: normalisation (100 = max);
    prototype_samples: samples the HOTS layer learns from; k: decoder spike lead (0 = calibrate);
    seed: every random choice."""

    classifier: str = "softmax"
    hidden: int = 128
    epochs: int = 40
    batch: int = 64
    lr: float = 2e-3
    l2: float = 1e-4
    percentile: float = 100.0
    prototype_samples: int = 100
    k: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {self.classifier!r}")


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, params: TrainParams,
        desc: str = "") -> list[np.ndarray]:
    """Bias-free weights (one matrix for softmax regression, two for the ReLU network) trained
    with Adam on mean cross-entropy + l2/2 |W|^2. Inputs are scaled by sqrt(n_features) during
    training (a conditioning choice), folded back into the first matrix afterwards."""
    rng = np.random.default_rng(params.seed)
    scale = np.sqrt(x.shape[1])
    x = x * scale
    sizes = [x.shape[1]] + ([params.hidden] if params.classifier == "mlp" else []) + [n_classes]
    weights = [rng.normal(0, np.sqrt(2.0 / a), (a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    onehot = np.eye(n_classes)[y]
    step = 0
    for _ in tqdm(range(params.epochs), desc=desc, unit="epoch", disable=None if desc else True,
                  leave=False):
        order = rng.permutation(len(x))
        for start in range(0, len(x), params.batch):
            rows = order[start:start + params.batch]
            acts = [x[rows]]
            for l, w in enumerate(weights):
                a = acts[-1] @ w
                acts.append(np.maximum(a, 0.0) if l < len(weights) - 1 else a)
            p = np.exp(acts[-1] - acts[-1].max(axis=1, keepdims=True))
            delta = (p / p.sum(axis=1, keepdims=True) - onehot[rows]) / len(rows)
            step += 1
            for l in reversed(range(len(weights))):
                grad = acts[l].T @ delta + params.l2 * weights[l]
                if l:
                    delta = (delta @ weights[l].T) * (acts[l] > 0)
                m[l] = 0.9 * m[l] + 0.1 * grad
                v[l] = 0.999 * v[l] + 0.001 * grad * grad
                weights[l] -= params.lr * (m[l] / (1 - 0.9 ** step)) / (
                    np.sqrt(v[l] / (1 - 0.999 ** step)) + 1e-8)
    weights[0] = weights[0] * scale
    return weights


def _convert(inputs, labels, classes, spec, params, desc=""):
    """Trained and normalised weights, the normalisation factors and the training accuracy."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[label] for label in labels])
    x = feature_matrix(inputs, spec.n_inputs)
    weights = fit(x, np.tile(y, len(PREFIXES)), len(classes), params, desc)
    scaled, lambdas = normalise(weights, x, params.percentile)
    full = x[-len(inputs):]  # fraction-major rows: the last block is the whole samples
    accuracy = float(np.mean(np.argmax(ann_logits(scaled, full), axis=1) == y))
    return scaled, lambdas, accuracy


def save_model(path, weights, classes, spec: FeatureSpec, prototypes: np.ndarray,
               training: dict) -> None:
    """Write the SNN model file with its HOTS prototypes and ``training`` metadata (JSON)."""
    make_parent(path)
    model = to_snn(weights, classes, spec.width, spec.height, spec.cell, spec.n_prototypes)
    model.save(path, extra={"hots_prototypes": prototypes.astype(np.float32),
                            "training": np.array(json.dumps(training))})


def calibrate(files, inputs, labels, classes, spec, prototypes, params, runner=None) -> dict:
    """Train on four fifths of ``files`` and calibrate the read-outs on the held-out fifth: the
    decoder's ``k`` (each sample streamed through the snn stage and one decoder per candidate,
    the k with the best early accuracy) and the live read-out (``calibrate_live``: the held-out
    samples as marker-free streams). Returns k, its table and the live setting with its table.
    The held-out files are mapped over ``runner``'s workers for the decoder's k; the marker-free
    stream is one stream, run in this process."""
    part = folds(files, 5, params.seed) == 0
    keep = np.flatnonzero(~part)
    weights, _, _ = _convert([inputs[i] for i in keep], [labels[i] for i in keep], classes, spec,
                             params, "calibration fit")
    held = [f for f, p in zip(files, part) if p]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "calibration.npz")
        save_model(path, weights, classes, spec, prototypes,
                   {"features": asdict(spec), "decoder": {"rule": "count", "k": 1}})
        table = evaluate(path, held, ks=K_CANDIDATES, desc="calibration", runner=runner)
        live = calibrate_live(path, held, params.seed)
    best = max(K_CANDIDATES, key=lambda k: (table[k]["accuracy_early"], -k))
    return {"k": best, "table": {str(k): {key: table[k][key] for key in (
        "accuracy_early", "early_rate", "median_event_fraction")} for k in K_CANDIDATES},
            "live": live}


def train(files: list[SegmentFile], out, spec: FeatureSpec = FeatureSpec(),
          params: TrainParams = TrainParams(), runner: Runner | None = None) -> dict:
    """Train on ``files`` and write the model to ``out``; returns the training metadata. The
    per-file work (features, calibration) is mapped over ``runner``'s workers (default: this
    process); the HOTS prototypes are learnt online, sample after sample, in this process. The
    model does not depend on the runner (its ``seconds`` aside)."""
    started = time.perf_counter()
    classes = sorted({f.label for f in files})
    if len(classes) < 2:
        raise DatasetError(f"training needs recordings of at least two classes, got {classes}")
    prototypes = learn_prototypes(files, spec, params.prototype_samples, params.seed)
    inputs, labels = extract(files, spec, prototypes, runner=runner)
    calibration = (calibrate(files, inputs, labels, classes, spec, prototypes, params, runner)
                   if params.k <= 0 else {"k": params.k, "table": None, "live": dict(LIVE_DEFAULTS)})
    weights, lambdas, accuracy = _convert(inputs, labels, classes, spec, params, "fit")
    training = {"features": asdict(spec), "decoder": {"rule": "count", "k": calibration["k"]},
                "params": asdict(params), "lambdas": lambdas, "prefixes": list(PREFIXES),
                "n_samples": len(files), "train_accuracy_ann": accuracy,
                "calibration": calibration["table"], "live": calibration["live"],
                "mean_feature_events": float(np.mean([len(i) for i in inputs])),
                "seconds": round(time.perf_counter() - started, 1)}
    save_model(out, weights, classes, spec, prototypes, training)
    return training
