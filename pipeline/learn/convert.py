"""ANN -> SNN conversion with data-based weight normalisation.

Follows Diehl et al. 2015 ("Fast-classifying, high-accuracy spiking deep networks through weight
and threshold balancing", IJCNN) and Rueckauer et al. 2017 ("Conversion of continuous-valued deep
networks to efficient event-driven networks for image classification", Front. Neurosci. 11:682).

The ANN is bias-free: ``a_0 = x``, ``a_l = relu(a_{l-1} W_l)`` for hidden layers, linear logits
at the last layer; a conv layer (``kernels.conv``) computes its cross-correlation instead of the
product, on maps in the core's channel-last order. Its input ``x`` is a rate in spikes per input
event (the feature vector of ``pipeline.learn.features`` sums to 1), each input spike carrying
weight 1.

The SNN has one integrate-and-fire layer (no leak, ``tau = inf``) per ANN layer, threshold 1,
reset by subtraction (Rueckauer et al.: the residual potential is kept, so the spike count
tracks the integrated input without the loss of reset to zero) and no refractory period. An IF
neuron fires at most once per input event (``kernels.lif``), so the input event plays the part of
Diehl's time step: a neuron's rate must stay below 1 spike per input event. Data-based
normalisation sets ``lambda_l`` to the maximum (``percentile = 100``) or the given percentile
(Rueckauer et al., 99.9) of the positive activations of layer l on the training data, and scales
``W_l' = W_l * lambda_{l-1} / lambda_l`` (``lambda_0 = 1``), so layer l fires at about
``a_l / lambda_l`` spikes per input event.

Positive per-layer scaling does not change the argmax of a bias-free ReLU network, so the
converted weights, run as an ANN (``ann_logits``), are the trained classifier.
"""

from __future__ import annotations

import numpy as np

from kernels.conv import IN_C, IN_H, IN_W, PX, PY, SX, SY, ConvShape, geometry
from pipeline.core.model import SnnModel

ROWS_PER_PASS = 256  # rows whose conv windows are gathered at once (rows x H' x W' x C x kh x kw)


def cross_correlate(a: np.ndarray, kernel: np.ndarray, conv: ConvShape) -> np.ndarray:
    """Conv layer ``conv`` (``kernels.conv``: zero padding, stride, no bias) on rows ``a``, each a
    map ``conv.in_shape`` in channel-last order, with ``kernel`` (out_c, in_c, kh, kw); rows of
    the output maps, channel-last."""
    row = geometry(kernel.shape, conv)
    c, h, w, sy, sx, py, px = (int(row[i]) for i in (IN_C, IN_H, IN_W, SY, SX, PY, PX))
    kh, kw = kernel.shape[2:]
    out = []
    for start in range(0, len(a), ROWS_PER_PASS):
        maps = np.pad(a[start:start + ROWS_PER_PASS].reshape(-1, h, w, c),
                      ((0, 0), (py, py), (px, px), (0, 0)))
        windows = np.lib.stride_tricks.sliding_window_view(maps, (kh, kw), axis=(1, 2))
        # windows[n, y, x, c, ky, kx] = maps[n, y + ky, x + kx, c]
        out.append(np.tensordot(windows[:, ::sy, ::sx], kernel, axes=([3, 4, 5], [1, 2, 3])))
    return np.concatenate(out).reshape(len(a), -1)


def ann_activations(weights: list[np.ndarray], x: np.ndarray, convs=()) -> list[np.ndarray]:
    """Activations of every layer for inputs ``x`` (rows): ReLU hidden layers, linear last;
    ``convs[l]`` a ``ConvShape`` makes layer l a conv layer (``None`` or no ``convs``: dense)."""
    out, a = [], x
    for l, w in enumerate(weights):
        a = cross_correlate(a, w, convs[l]) if convs and convs[l] is not None else a @ w
        if l < len(weights) - 1:
            a = np.maximum(a, 0.0)
        out.append(a)
    return out


def ann_logits(weights: list[np.ndarray], x: np.ndarray, convs=()) -> np.ndarray:
    """The classifier's output (logits) for inputs ``x`` (layers as ``ann_activations``)."""
    return ann_activations(weights, x, convs)[-1]


def normalise(weights: list[np.ndarray], x: np.ndarray, percentile: float = 100.0,
              convs=()) -> tuple[list[np.ndarray], list[float]]:
    """Weights (kernels of conv layers alike) scaled layer by layer (Diehl et al. 2015) with
    ``lambda_l`` the ``percentile`` of the positive activations of layer l on the data ``x``;
    returns (weights, lambdas)."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    lambdas = []
    for a in ann_activations(weights, x, convs):
        positive = a[a > 0]
        lambdas.append(float(np.percentile(positive, percentile)) if len(positive) else 1.0)
    previous = [1.0] + lambdas[:-1]
    scaled = [w * (p / lam) for w, p, lam in zip(weights, previous, lambdas)]
    return scaled, lambdas


def to_snn(weights: list[np.ndarray], classes, width: int, height: int, cell: int,
           channels: int, convs=()) -> SnnModel:
    """IF layers (threshold 1, reset by subtraction) over normalised ``weights`` (``convs`` as
    ``ann_activations``), fed by feature events mapped with (width, height, cell, channels) as
    ``kernels.snn_input`` says."""
    n = len(weights)
    return SnnModel(weights=tuple(np.asarray(w, np.float32) for w in weights),
                    thresholds=(1.0,) * n, biases=(0.0,) * n, taus_us=(np.inf,) * n,
                    resets=("subtract",) * n, refractory_us=(0,) * n,
                    classes=tuple(classes), input="features", width=width, height=height,
                    cell=cell, channels=channels, convs=tuple(convs))
