"""Binarized networks (review section 3.1): binary activations and 1-bit weights, trained with a
straight-through estimator, run by the core as IF neurons that compute the binary units exactly.

Follows Courbariaux et al. 2016 ("Binarized neural networks: training deep neural networks with
weights and activations constrained to +1 or -1", arXiv:1602.02830; BinaryConnect, NeurIPS 2015):
real-valued latent weights kept for the update and clipped to [-1, 1], binarized in the forward
pass; binary activations; gradients passed straight through (within |a| <= 1 for activations,
|w| <= 1 for weights); batch normalisation before each binary activation, folded into a
per-neuron threshold at inference; one scale per layer (Rastegari et al. 2016, XNOR-Net), here
folded into the thresholds.

Network, on a sample's input-spike counts ``c`` (``c_i`` input events at SNN input i so far):

- hidden unit j: ``h_j = 1[c . B1_j >= theta_j]`` with ``B1`` in {0, 1};
- output k: ``votes_k = h . B2_k`` with ``B2`` in {0, 1}; the class is the one with most votes.

The weights are unipolar ({0, 1}, not {-1, +1}) so that every neuron's input only grows while a
sample's events arrive: a hidden neuron's input crosses ``theta_j`` at most once, and whether it
has crossed at the end does not depend on the order of the events. In the core the hidden layer
is IF (no leak) with weights ``B1``, per-neuron threshold ``theta_j`` and a refractory period
longer than any sample (``REFRACTORY_US``), so it fires exactly once, at the event where
``c . B1_j`` reaches ``theta_j``, or never: its spikes are the binary units. The output layer is
IF with weights ``B2`` and threshold 1: every hidden spike into a class adds one output spike, so
the output spike counts are the votes, at every moment of the sample. The exact SNN's final
decision is therefore the binary network's, and its early decisions read the votes so far.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.core.model import SnnModel
from pipeline.learn.classifier import (
    Examples,
    Trained,
    TrainParams,
    accuracy,
    batches,
    hidden_width,
    one_thread,
)
from pipeline.learn.features import PREFIXES

HIDDEN = 256  # hidden units unless --hidden says otherwise
REFRACTORY_US = 1_000_000  # 1 s: longer than any N-MNIST sample (about 0.3 s), see module doc
SPARSE = 0.25  # latent first-layer weights start uniform in [-1, SPARSE]: 20 % of B1 is 1


def count_rows(examples: Examples, fractions=PREFIXES) -> tuple[np.ndarray, np.ndarray]:
    """Input-spike counts (float64, integer values) of every sample at every fraction of its
    input events, fraction-major, and the rows' classes."""
    n = examples.spec.n_inputs
    rows = [np.bincount(idx[:max(1, round(f * len(idx)))], minlength=n)
            for f in fractions for idx in examples.inputs]
    return np.array(rows, np.float64), np.tile(examples.y, len(fractions))


def simulate(model: SnnModel, counts: np.ndarray) -> np.ndarray:
    """The binary network of a model file on count rows: the votes of each class."""
    w1, w2 = (np.asarray(w, np.float64) for w in model.weights)
    hidden = counts @ w1 >= np.asarray(model.thresholds[0], np.float64)
    return hidden @ w2


class _Binarize(torch.autograd.Function):
    """Forward 1[x > 0]; backward the gradient where |x| <= 1 (hard-tanh straight-through)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def fit(examples: Examples, params: TrainParams, desc: str = "") -> Trained:
    """``params.hidden`` (default ``HIDDEN``) binary hidden units, binary output weights; Adam
    on softmax cross-entropy of the votes (times a learnt positive temperature) over prefix
    count rows."""
    counts, y = count_rows(examples)
    with one_thread():
        b1, thresholds, b2 = _train(counts, y, len(examples.classes),
                                    hidden_width(params, HIDDEN), params, desc)
    model = SnnModel(weights=(b1.astype(np.float32), b2.astype(np.float32)),
                     thresholds=(thresholds, 1.0), biases=(0.0, 0.0), taus_us=(np.inf, np.inf),
                     resets=("subtract", "subtract"), refractory_us=(REFRACTORY_US, 0),
                     classes=examples.classes, input="features", width=examples.spec.width,
                     height=examples.spec.height, cell=examples.spec.cell,
                     channels=examples.spec.n_prototypes)
    full = counts[-len(examples.inputs):]
    return Trained(model, {"lambdas": None, "refractory_us": REFRACTORY_US,
                           "train_accuracy_ann": accuracy(simulate(model, full), examples.y)})


def _train(counts, y, n_out, width, params, desc):
    """Binary weights B1, B2 (0/1) and hidden thresholds (counts) trained with batch
    normalisation before the binary activation, folded into the thresholds afterwards."""
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    n_in = counts.shape[1]
    w1 = torch.nn.Parameter(torch.empty(n_in, width).uniform_(-1, SPARSE))
    w2 = torch.nn.Parameter(torch.empty(width, n_out).uniform_(-1, 1))
    shift = torch.nn.Parameter(torch.zeros(width))  # threshold in batch-norm units
    temperature = torch.nn.Parameter(torch.tensor(-3.0))  # log of the softmax scale of the votes
    norm = torch.nn.BatchNorm1d(width, affine=False)
    optimiser = torch.optim.Adam([w1, w2, shift, temperature], lr=params.lr)
    xt, yt = torch.from_numpy(counts.astype(np.float32)), torch.from_numpy(y)
    for rows in batches(len(counts), params, rng, desc):
        if len(rows) < 2:  # batch normalisation needs two rows
            continue
        rows = torch.from_numpy(rows)
        pre = xt[rows] @ _Binarize.apply(w1)
        hidden = _Binarize.apply(norm(pre) - shift)
        votes = hidden @ _Binarize.apply(w2)
        loss = torch.nn.functional.cross_entropy(votes * temperature.exp(), yt[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            w1.clamp_(-1, 1)
            w2.clamp_(-1, 1)
    with torch.no_grad():
        b1 = (w1 > 0).double().numpy()
        pre = counts @ b1
        # batch normalisation folded: norm(pre) > shift  <=>  pre > mean + std * shift
        thresholds = pre.mean(axis=0) + np.sqrt(pre.var(axis=0) + norm.eps) * shift.double().numpy()
        # counts are whole numbers: the smallest whole count above the threshold, at least 1
        thresholds = np.maximum(np.floor(thresholds) + 1.0, 1.0)
        return b1, thresholds, (w2 > 0).double().numpy()
