"""Training and evaluation: ours vs the usual baseline on the same N-MNIST split.

Split: the 1000 samples of the N-MNIST training folder under ``RECORDINGS`` (bench/common.py),
stratified seeded fold 0 of 5 held out (200 samples), the other 800 for training
(``pipeline.learn.features.select``).

Ours: ``pipeline.learn.train.train`` with its defaults (HOTS features, prefix training, softmax
regression, conversion, decoder calibration), then ``pipeline.learn.evaluate.evaluate`` streaming the
200 through denoise -> hots -> snn -> decoder.
Peer: tonic ``ToAveragedTimesurface`` (HATS, Sironi et al. 2018: cells of 10 px, 7 x 7 surfaces,
tau 20 ms, delta_t 100 ms) on every sample, flattened, and a scikit-learn ``LinearSVC`` (C = 1,
on the raw histograms: standardising them cost 7 points) trained on the same 800 and scored on
the same 200. Both run in this one process, one sample after the other, and are timed in wall
seconds (``time.perf_counter``), warm: ours loads its numba kernels from their cache, tonic is
plain Python.

Records: accuracies (ours = the SNN's forced decision at segment end; also the absolute targets
as ratios to them) and wall seconds to train and to evaluate.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from bench.common import RECORDINGS
from pipeline.learn.evaluate import evaluate
from pipeline.learn.features import select
from pipeline.learn.train import train
from sensors.readers import read_all

DATA = RECORDINGS / "nmnist" / "Train"
TARGETS = {"accuracy_final": 0.96, "accuracy_early": 0.94, "early_rate": 0.9}


def tonic_features(path: str) -> tuple[np.ndarray, float]:
    """Flattened tonic HATS histograms of one recording and the seconds they took."""
    import tonic

    events = read_all(path)[1]
    start = time.perf_counter()
    structured = np.zeros(len(events), dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
    for name in "txyp":
        structured[name] = events[name]
    transform = tonic.transforms.ToAveragedTimesurface(
        sensor_size=(34, 34, 2), cell_size=10, surface_size=7, time_window=100_000, tau=20_000)
    features = transform(structured).reshape(-1)
    return features, time.perf_counter() - start


def baseline(train_files, test_files) -> dict:
    from sklearn.svm import LinearSVC

    computed = [tonic_features(f.path) for f in train_files + test_files]
    x = np.array([c[0] for c in computed])
    seconds = [c[1] for c in computed]
    y = np.array([f.label for f in train_files + test_files])
    n = len(train_files)
    start = time.perf_counter()
    svm = LinearSVC(C=1.0, max_iter=20_000).fit(x[:n], y[:n])
    fit_s = time.perf_counter() - start
    accuracy = float(np.mean(svm.predict(x[n:]) == y[n:]))
    return {"accuracy": accuracy, "train_s": sum(seconds[:n]) + fit_s,
            "eval_s": sum(seconds[n:])}


def ours(train_files, test_files) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.npz")
        start = time.perf_counter()
        train(train_files, path)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        result = evaluate(path, test_files, desc="").metrics
        return {**result, "train_s": train_s, "eval_s": time.perf_counter() - start}


def run() -> list[dict]:
    train_files = select(DATA, 5, 0, test=False)
    test_files = select(DATA, 5, 0, test=True)
    us, peer = ours(train_files, test_files), baseline(train_files, test_files)
    n, m = len(train_files), len(test_files)
    out = [
        {"name": f"accuracy on {m} held-out, trained on {n}: SNN final vs tonic HATS + LinearSVC",
         "ours": us["accuracy_final"], "peer": peer["accuracy"], "unit": "accuracy",
         "ratio": us["accuracy_final"] / peer["accuracy"], "target": 1.0},
        {"name": "accuracy of our ANN (same features) vs tonic HATS + LinearSVC",
         "ours": us["accuracy_ann"], "peer": peer["accuracy"], "unit": "accuracy",
         "ratio": us["accuracy_ann"] / peer["accuracy"], "target": None},
        {"name": f"train on {n} (features + fit), wall s: ours vs tonic + SVM",
         "ours": us["train_s"], "peer": peer["train_s"], "unit": "s",
         "ratio": peer["train_s"] / us["train_s"], "target": None},
        {"name": f"evaluate {m} samples (features + classify), wall s: ours vs tonic",
         "ours": us["eval_s"], "peer": peer["eval_s"], "unit": "s",
         "ratio": peer["eval_s"] / us["eval_s"], "target": None},
    ]
    for key, goal in TARGETS.items():
        out.append({"name": f"{key} vs the target", "ours": us[key], "peer": goal,
                    "unit": "fraction", "ratio": us[key] / goal, "target": 1.0})
    out.append({"name": "median_event_fraction vs the limit 0.30 (ratio limit/ours)",
                "ours": us["median_event_fraction"], "peer": 0.30, "unit": "fraction",
                "ratio": 0.30 / us["median_event_fraction"], "target": 1.0})
    return out
