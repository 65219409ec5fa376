"""Local learning (review section 3.5): a spiking feature layer learnt without labels by
spike-timing-dependent plasticity, event by event, and a read-out trained on its spikes.

The feature layer follows Diehl and Cook 2015 ("Unsupervised learning of digit recognition using
spike-timing-dependent plasticity", Front. Comput. Neurosci. 9:99), fed by the feature events of
the HOTS layer instead of Poisson pixels, with time counted in input events (one input event, one
step; the N-MNIST samples are saccades of about 0.3 s whose event rate varies, and the event clock
makes the constants below independent of it):

- ``N`` = ``params.hidden`` (default ``HIDDEN``) leaky integrate-and-fire neurons, all fed by
  the 2304 inputs through weights ``w`` in [0, W_MAX]; potential decay ``exp(-1/TAU_M)`` per
  input event;
- lateral inhibition as a winner-take-all: when neurons reach their thresholds, only the one
  furthest above its threshold fires and every potential is set to 0;
- adaptive thresholds (homeostasis): ``THETA_0 + theta_j``, ``theta_j`` growing by ``THETA_PLUS`` at
  each spike of j, so every neuron gets to win;
- the pre-synaptic trace rule of Diehl and Cook: every input i keeps a trace ``x_i`` set to 1 at
  its events and decaying by ``exp(-1/TAU_PRE)`` per input event; when j fires,
  ``w_ij += ETA * (x_i - X_TAR) * (W_MAX - w_ij) ** MU`` for every i, then clipped to [0, W_MAX]
  (inputs that just fired are potentiated, the others depressed);
- after each sample, each neuron's weights are scaled to a mean of ``WEIGHT_MEAN`` (Diehl and
  Cook's weight normalisation); potentials and traces start from 0 at each sample.

The weights are learnt in one pass over the training samples in a seeded order, by the numba
loop ``_learn_sample`` (state in arrays the caller owns, as in ``kernels``), which the tests
compare with its plain reference ``learn_sample_reference`` on N-MNIST samples. Then, as a layer of the exact core, the feature layer is IF (no leak,
no adaptation). The core has no lateral connections, so the winner-take-all is replaced by a
feed-forward stand-in: each neuron's learnt weights less their mean (zero-sum), so an input
spread evenly over the inputs drives no neuron and a neuron fires only for inputs that match its
pattern better than that. The weights are then normalised by the data (Diehl et al. 2015:
``lambda`` the ``percentile`` of ``x . w_j`` over the training rows), so the layer fires at most
about one spike per input event. The read-out is a softmax regression (``classifier.fit``) on
the layer's spike counts per input event, counted by the core itself (``kernels.lif``) on every
training sample and on its 15, 30 and 50 % prefixes; normalised and converted to the IF output
layer.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from numba import njit
from tqdm import tqdm

from kernels import lif
from pipeline.core.model import SnnModel
from pipeline.learn.classifier import (
    Examples,
    Trained,
    TrainParams,
    accuracy,
    hidden_width,
)
from pipeline.learn.classifier import fit as fit_softmax
from pipeline.learn.convert import ann_logits, normalise
from pipeline.learn.features import PREFIXES

HIDDEN = 400  # feature neurons unless --hidden says otherwise
TAU_M = 50.0  # input events: membrane time constant while learning
TAU_PRE = 50.0  # input events: pre-synaptic trace time constant
THETA_0 = 4.0  # base threshold while learning (potential units, weights in [0, W_MAX])
THETA_PLUS = 0.5  # threshold increase per spike of a neuron
ETA = 0.01  # learning rate
X_TAR = 0.4  # target trace: inputs with a lower trace are depressed when the neuron fires
W_MAX = 1.0  # largest weight
MU = 0.2  # exponent of the soft bound (W_MAX - w) ** MU
WEIGHT_MEAN = 0.1  # mean of each neuron's weights after every sample (Diehl and Cook: 78 / 784)
LEARN = np.array([TAU_M, TAU_PRE, THETA_0, THETA_PLUS, ETA, X_TAR, W_MAX, MU])


@njit(cache=True, nogil=True)
def _learn_sample(idx, w, theta, constants):
    """One sample's input indices, in order, through the learning layer; updates ``w``
    (n_in, N) and ``theta`` (N) in place. Returns the winners (int64, one per spike)."""
    tau_m, tau_pre, theta_0, theta_plus, eta, x_tar, w_max, mu = constants
    n_in, n = w.shape
    decay_m = math.exp(-1.0 / tau_m)
    v = np.zeros(n)
    last = np.full(n_in, -1, np.int64)  # event number of each input's last event (-1: none yet)
    winners = np.empty(len(idx), np.int64)
    spikes = 0
    for e in range(len(idx)):
        i = idx[e]
        last[i] = e
        best, margin = -1, 0.0
        for j in range(n):
            v[j] = v[j] * decay_m + w[i, j]
            above = v[j] - (theta_0 + theta[j])
            if above >= 0.0 and (best < 0 or above > margin):
                best, margin = j, above
        if best < 0:
            continue
        for j in range(n):
            v[j] = 0.0
        theta[best] += theta_plus
        winners[spikes] = best
        spikes += 1
        for k in range(n_in):
            x = math.exp(-(e - last[k]) / tau_pre) if last[k] >= 0 else 0.0  # trace: 1 at an event
            room = w_max - w[k, best]
            step = eta * (x - x_tar) * (room ** mu if room > 0.0 else 0.0)
            w[k, best] = min(max(w[k, best] + step, 0.0), w_max)
    return winners[:spikes]


def learn_sample_reference(idx, w, theta, constants=LEARN) -> np.ndarray:
    """``_learn_sample`` written plainly, one Python step per event and per neuron: the slow
    reference the kernel is compared with."""
    tau_m, tau_pre, theta_0, theta_plus, eta, x_tar, w_max, mu = [float(c) for c in constants]
    n_in, n = w.shape
    v = [0.0] * n
    last = [None] * n_in
    winners = []
    for e, i in enumerate(int(i) for i in idx):
        last[i] = e
        v = [v[j] * math.exp(-1.0 / tau_m) + w[i, j] for j in range(n)]
        above = [v[j] - (theta_0 + theta[j]) for j in range(n)]
        candidates = [j for j in range(n) if above[j] >= 0.0]
        if not candidates:
            continue
        best = max(candidates, key=lambda j: (above[j], -j))
        v = [0.0] * n
        theta[best] += theta_plus
        winners.append(best)
        for k in range(n_in):
            x = math.exp(-(e - last[k]) / tau_pre) if last[k] is not None else 0.0
            room = w_max - w[k, best]
            step = eta * (x - x_tar) * (room ** mu if room > 0.0 else 0.0)
            w[k, best] = min(max(w[k, best] + step, 0.0), w_max)
    return np.array(winners, np.int64)


def learn_features(examples: Examples, n: int, seed: int = 0, desc: str = "") -> np.ndarray:
    """Weights (n_in, n) of the STDP layer after one pass over the samples in a seeded order."""
    rng = np.random.default_rng(seed)
    n_in = examples.spec.n_inputs
    total = WEIGHT_MEAN * n_in
    w = rng.uniform(0.0, 0.3 * W_MAX, (n_in, n))
    w *= total / w.sum(axis=0)
    theta = np.zeros(n)
    for s in tqdm(rng.permutation(len(examples.inputs)), desc=desc, unit="sample",
                  disable=None if desc else True, leave=False):
        _learn_sample(examples.inputs[s], w, theta, LEARN)
        w *= total / np.maximum(w.sum(axis=0), 1e-12)
    return w


def spike_rows(net: lif.LIFNetwork, examples: Examples, fractions=PREFIXES) -> np.ndarray:
    """Spike counts of the network's first layer per input event (rows as ``Examples.rows``),
    computed by the exact core on every sample: the count of spikes caused by the first
    ``fraction`` of the sample's input events, over that number of events."""
    n = int(net.sizes[1])
    rows = np.empty((len(fractions), len(examples.inputs), n))
    for s, idx in enumerate(examples.inputs):
        spikes = lif.run(net, lif.init_state(net), np.arange(len(idx)), idx)
        for f, fraction in enumerate(fractions):
            k = max(1, round(fraction * len(idx)))
            rows[f, s] = np.bincount(spikes["neuron"][spikes["src"] < k], minlength=n) / k
    return rows.reshape(-1, n)


def fit(examples: Examples, params: TrainParams, desc: str = "") -> Trained:
    """STDP feature layer of ``params.hidden`` (default ``HIDDEN``) neurons, then a softmax
    read-out (``params``: epochs, batch, lr, l2, seed, percentile) on its spikes as the core
    computes them."""
    w = learn_features(examples, hidden_width(params, HIDDEN), params.seed, desc and f"{desc} stdp")
    w = w - w.mean(axis=0)  # zero-sum: a uniform input drives no neuron (module doc)
    x, y = examples.rows()
    (first,), (lam,) = normalise([w], x, params.percentile)
    layer = lif.make_network([first], [1.0], [np.inf], "subtract")
    rates = spike_rows(layer, examples)
    readout = fit_softmax(rates, y, len(examples.classes), replace(params, classifier="softmax"),
                          desc and f"{desc} read-out")
    (out,), (lam_out,) = normalise(readout, rates, params.percentile)
    full = rates[-len(examples.inputs):]
    return Trained(examples.snn([first, out]), {
        "lambdas": [lam, lam_out],
        "train_accuracy_ann": accuracy(ann_logits([out], full), examples.y)})


def simulate(model: SnnModel, x: np.ndarray) -> np.ndarray:
    """The network's rate approximation on feature rows ``x``: the feature layer's rate
    ``min(max(x w0, 0), 1)`` (spikes per input event), the read-out linear on it."""
    return np.clip(x @ np.asarray(model.weights[0], np.float64), 0.0, 1.0) @ model.weights[1]
