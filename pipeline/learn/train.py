"""Training: time-surface features -> a training method -> SNN model file.

1. HOTS prototypes learnt online on a seeded subset of the training samples, then frozen
   (``pipeline.learn.features``); every sample streamed through the denoise and hots stages.
2. The network fitted by the method ``params.method`` (``pipeline.learn.methods``) on each
   sample's SNN inputs. The default, ``conversion``: prefix training (every sample contributes its
   feature vector after 15, 30, 50 and 100 % of its feature events, so the classifier is right on
   early evidence), a bias-free classifier trained with Adam, conversion with data-based
   normalisation (``pipeline.learn.classifier``, ``pipeline.learn.convert``; docs/training.md).
3. The decoder's spike lead ``k`` calibrated on a held-out fifth of the training samples: a model
   trained on the other four fifths is streamed through the real snn and decoder stages, and the
   smallest ``k`` whose early accuracy (abstentions count as wrong) is within ``params.k_slack``
   held-out samples of the best is kept (``smallest_k``).
4. The model trained on all training samples is saved with its prototypes and, under
   ``training``, a JSON string: feature parameters, decoder parameters, normalisation factors and
   training statistics.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict

import numpy as np

from pipeline.core.files import make_parent
from pipeline.core.model import LIVE_DEFAULTS, SnnModel
from pipeline.learn.classifier import Examples, Trained, TrainParams
from pipeline.learn.cluster import Runner
from pipeline.learn.continuous import calibrate_live
from pipeline.learn.evaluate import evaluate
from pipeline.learn.features import (
    PREFIXES,
    DatasetError,
    FeatureSpec,
    folds,
    learn_prototypes,
    readable_inputs,
)
from pipeline.learn.methods import method
from sensors.replay import SegmentFile

K_CANDIDATES = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def fitted(inputs, labels, classes, spec: FeatureSpec, params: TrainParams, desc="") -> Trained:
    """The network of method ``params.method`` fitted on these samples (``labels``: class names)."""
    index = {c: i for i, c in enumerate(classes)}
    examples = Examples(list(inputs), np.array([index[label] for label in labels]), tuple(classes),
                        spec)
    return method(params.method)(examples, params, desc)


def save_model(path, model: SnnModel, prototypes: np.ndarray, training: dict) -> None:
    """Write the SNN model file with its HOTS prototypes and ``training`` metadata (JSON)."""
    make_parent(path)
    model.save(path, extra={"hots_prototypes": prototypes.astype(np.float32),
                            "training": np.array(json.dumps(training))})


def smallest_k(table: dict, slack: float) -> int:
    """The smallest k of ``table`` ({k: metrics}) whose early accuracy is within ``slack`` of the
    best: a larger lead decides later, and on a small calibration set the accuracies of
    neighbouring k differ by a sample or two, noise that should not buy a later decision."""
    best = max(table[k]["accuracy_early"] for k in table)
    return min(k for k in table if table[k]["accuracy_early"] >= best - slack - 1e-12)


def calibrate(files, inputs, labels, classes, spec, prototypes, params, runner=None) -> dict:
    """Train on four fifths of ``files`` and calibrate the read-outs on the held-out fifth: the
    decoder's ``k`` (each sample streamed through the snn stage and one decoder per candidate;
    ``smallest_k`` within ``params.k_slack`` samples of the best early accuracy) and the live
    read-out (``calibrate_live``: the held-out samples as marker-free streams). Returns k, its
    table and the live setting with its table.
    The held-out files are mapped over ``runner``'s workers for the decoder's k; the marker-free
    stream is one stream, run in this process."""
    part = folds(files, 5, params.seed) == 0
    keep = np.flatnonzero(~part)
    trained = fitted([inputs[i] for i in keep], [labels[i] for i in keep], classes, spec, params,
                     "calibration fit")
    held = [f for f, p in zip(files, part) if p]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "calibration.npz")
        save_model(path, trained.model, prototypes,
                   {"features": asdict(spec), "decoder": {"rule": "count", "k": 1}})
        table = evaluate(path, held, ks=K_CANDIDATES, desc="calibration", runner=runner)
        live = calibrate_live(path, held, params.seed)
    return {"k": smallest_k(table, params.k_slack / len(held)),
            "table": {str(k): {key: table[k][key] for key in (
                "accuracy_early", "early_rate", "median_event_fraction")} for k in K_CANDIDATES},
            "live": live}


def check_classes(files: list[SegmentFile]) -> list[str]:
    """The class names of ``files``; DatasetError when there are fewer than two."""
    classes = sorted({f.label for f in files})
    if len(classes) < 2:
        raise DatasetError(f"training needs recordings of at least two classes, got {classes}")
    return classes


def train(files: list[SegmentFile], out, spec: FeatureSpec = FeatureSpec(),
          params: TrainParams = TrainParams(), runner: Runner | None = None) -> dict:
    """Train on ``files`` and write the model to ``out``; returns the training metadata. The
    per-file work (features, calibration) is mapped over ``runner``'s workers (default: this
    process); the HOTS prototypes are learnt online, sample after sample, in this process. The
    model does not depend on the runner (its ``seconds`` aside)."""
    started = time.perf_counter()
    method(params.method)  # an unknown name fails before any work
    check_classes(files)
    prototypes = learn_prototypes(files, spec, params.prototype_samples, params.seed)
    # the calibration split and the counts below index the readable files only
    files, inputs, labels = readable_inputs(files, spec, prototypes, runner=runner)
    classes = check_classes(files)
    calibration = (calibrate(files, inputs, labels, classes, spec, prototypes, params, runner)
                   if params.k <= 0 else {"k": params.k, "table": None, "live": dict(LIVE_DEFAULTS)})
    trained = fitted(inputs, labels, classes, spec, params, "fit")
    training = {"features": asdict(spec), "decoder": {"rule": "count", "k": calibration["k"]},
                "params": asdict(params), **trained.info, "prefixes": list(PREFIXES),
                "n_samples": len(files),
                "calibration": calibration["table"], "live": calibration["live"],
                "mean_feature_events": float(np.mean([len(i) for i in inputs])),
                "seconds": round(time.perf_counter() - started, 1)}
    save_model(out, trained.model, prototypes, training)
    return training
