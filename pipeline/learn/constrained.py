"""Constrained training before conversion (review section 3.3): the ANN is trained under the
constraints of the IF network it becomes, so conversion loses little.

Follows the "train with the SNN's constraints" recipes of Esser et al. 2016 ("Convolutional
networks for fast, energy-efficient neuromorphic computing", PNAS 113:11441: low-precision
weights in the forward pass, full precision kept for the update, straight-through gradients),
Hunsberger and Eliasmith 2015 ("Spiking deep networks with LIF neurons", arXiv:1510.08829:
activations shaped like the spiking neuron's rate) and Rueckauer et al. 2017 (no biases, rates
bounded by the maximum firing rate):

- no biases (the IF neurons have none);
- hidden activations ``min(max(x W1, 0), 1)``: an IF neuron with threshold 1 fed by feature
  events fires at most once per input event, so its rate, in spikes per input event, is the
  clipped ReLU of its input (inputs ``x`` are rates per input event, each row sums to 1);
- weights quantised to ``BITS`` bits per layer in the forward pass (``2**(BITS-1) - 1`` levels each
  side of 0 times one scale per layer; symmetric, straight-through estimator, Courbariaux et al.
  2015), so the model file holds at most ``2**BITS - 1`` distinct values per layer;
- prefix training rows as in conversion (``Examples.rows``), Adam on softmax cross-entropy plus
  L2 weight decay.

Conversion (``pipeline.learn.convert``): the hidden layer is already in IF units (threshold 1,
rate at most 1 spike per input event), so its weights are kept; the output layer is normalised
by the data (Diehl et al. 2015: ``lambda`` the ``percentile`` of the positive logits over the
training rows), and ``to_snn`` makes IF layers of both.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.learn.classifier import (
    Examples,
    Trained,
    TrainParams,
    accuracy,
    batches,
    hidden_width,
    one_thread,
)
from pipeline.learn.convert import normalise

BITS = 8  # weight precision per layer: levels -(2**(BITS-1)-1) .. 2**(BITS-1)-1 times a scale
HIDDEN = 128  # hidden units unless --hidden says otherwise
RATE_LIMIT = 1.0  # spikes per input event an IF neuron with threshold 1 can reach


def quantise(w: torch.Tensor, bits: int = BITS) -> torch.Tensor:
    """``w`` rounded to the symmetric grid of ``bits`` bits scaled to its largest magnitude; the
    gradient passes straight through (Courbariaux et al. 2015)."""
    levels = 2 ** (bits - 1) - 1
    scale = w.detach().abs().max().clamp_min(1e-12) / levels
    return w + (torch.round(w / scale) * scale - w).detach()


def hidden_rates(x: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """The constrained ANN's hidden layer: clipped ReLU of ``x w1`` (spikes per input event)."""
    return np.clip(x @ w1, 0.0, RATE_LIMIT)


def fit(examples: Examples, params: TrainParams, desc: str = "") -> Trained:
    """One hidden layer of ``params.hidden`` (default ``HIDDEN``) clipped-ReLU units, quantised
    weights, no biases; trained with Adam (``params``: epochs, batch, lr, l2, seed), converted to
    two IF layers."""
    x, y = examples.rows()
    with one_thread():
        first, second = _train(x * np.sqrt(x.shape[1]), y, len(examples.classes),
                               hidden_width(params, HIDDEN), params, desc)
    first = first * np.sqrt(x.shape[1])
    h = hidden_rates(x, first)
    (out,), (lam,) = normalise([second], h, params.percentile)
    full = h[-len(examples.inputs):]
    return Trained(examples.snn([first, out]), {
        "lambdas": [RATE_LIMIT, lam], "bits": BITS,
        "train_accuracy_ann": accuracy(full @ out, examples.y)})


def _train(x, y, n_out, width, params, desc):
    """Quantised weights (numpy) of the clipped network trained on rows ``x`` (conditioned:
    ``x * sqrt(n_in)``, as ``classifier.fit`` does) and classes ``y``."""
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    n_in = x.shape[1]
    w1 = torch.nn.Parameter(torch.randn(n_in, width) * np.sqrt(2.0 / n_in))
    w2 = torch.nn.Parameter(torch.randn(width, n_out) * np.sqrt(2.0 / width))
    optimiser = torch.optim.Adam([w1, w2], lr=params.lr)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    for rows in batches(len(x), params, rng, desc):
        rows = torch.from_numpy(rows)
        h = torch.clamp(xt[rows] @ quantise(w1), 0.0, RATE_LIMIT)
        loss = torch.nn.functional.cross_entropy(h @ quantise(w2), yt[rows]) + \
            params.l2 / 2 * (w1.pow(2).sum() + w2.pow(2).sum())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return quantise(w1).double().numpy(), quantise(w2).double().numpy()
