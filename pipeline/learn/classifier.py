"""What every training method takes and returns, and the conversion method (review section 3.2).

A training method (``pipeline.learn.methods``) is a function ``fit(examples, params, desc)``:

- ``examples`` (``Examples``): the training samples as the SNN sees them, each sample's SNN input
  indices in time order (the feature events mapped by ``kernels.snn_input``), with its class;
- ``params`` (``TrainParams``): the training parameters of ``evpipe train``;
- ``desc``: the label of its progress bars ("" shows none);

and returns a ``Trained``: the network the exact event-driven core runs (``SnnModel``) and a
JSON-able dict of what the method wants recorded in the model's ``training`` metadata (at least
``lambdas``, the normalisation factors or ``None``, and ``train_accuracy_ann``, the method's own
non-spiking network on the training samples' whole feature vectors).

Conversion (Diehl et al. 2015; Rueckauer et al. 2017): a bias-free classifier trained with Adam
(Kingma and Ba 2015) on softmax cross-entropy with L2 weight decay, softmax regression or one
hidden ReLU layer (or several bagged into one, ``bagged``), on the prefix rows of
``Examples.rows``, then normalised layer by layer (``pipeline.learn.convert``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from pipeline.core.model import SnnModel
from pipeline.learn.convert import ann_logits, normalise, to_snn
from pipeline.learn.features import PREFIXES, FeatureSpec, feature_matrix, tile_columns

CLASSIFIERS = ("softmax", "mlp", "conv")


@dataclass(frozen=True)
class TrainParams:
    """method: the training method (``pipeline.learn.methods``); classifier: "softmax", "mlp"
    (one hidden ReLU layer) or "conv" (two conv layers, ``pipeline.learn.convnet``); hidden: the
    width of the hidden layer of "mlp", the channels of "conv"'s layers, and the width of the
    hidden layer of the methods with one (0: the method's own default, ``hidden_width``); epochs,
    batch, lr (Adam step), l2 (weight decay): the optimiser; percentile: normalisation (100 =
    max); prototype_samples: samples the HOTS layer learns from; k: decoder spike lead (0 =
    calibrate); k_slack: calibration keeps the smallest k whose early accuracy is at most this
    many held-out samples below the best k's (0: the best k itself); tile: the conversion
    method's softmax and mlp classifiers read the counts of tiles of tile x tile input cells at
    every cell-sized shift (``features.tile_columns``; 1: the cells themselves); ensemble: the
    "mlp" classifier of the conversion method is this many networks bagged into one hidden layer
    (``bagged``; 1: one network); seed: every random choice."""

    method: str = "conversion"
    classifier: str = "softmax"
    hidden: int = 0
    epochs: int = 40
    batch: int = 64
    lr: float = 2e-3
    l2: float = 1e-4
    percentile: float = 100.0
    prototype_samples: int = 100
    k: int = 0
    k_slack: int = 1
    tile: int = 1
    ensemble: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {self.classifier!r}")
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0 (0: the method's default), got {self.hidden}")
        if self.k_slack < 0:
            raise ValueError(f"k_slack must be >= 0 (held-out samples), got {self.k_slack}")
        for name in ("epochs", "batch", "prototype_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.l2 >= 0:  # nan fails both
            raise ValueError(f"lr must be > 0 and l2 >= 0, got lr {self.lr} and l2 {self.l2}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.k < 0:
            raise ValueError(f"k must be >= 0 (0: calibrate), got {self.k}")
        if self.tile < 1:
            raise ValueError(f"tile must be >= 1 (input cells per tile side), got {self.tile}")
        if self.tile > 1 and (self.method != "conversion" or self.classifier == "conv"):
            raise ValueError(f"tile applies to the conversion method's softmax and mlp "
                             f"classifiers only, got tile {self.tile} with method "
                             f"{self.method!r} and classifier {self.classifier!r}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1 (networks bagged), got {self.ensemble}")
        if self.ensemble > 1 and (self.method, self.classifier) != ("conversion", "mlp"):
            raise ValueError(f"ensemble applies to the conversion method's mlp classifier only, "
                             f"got ensemble {self.ensemble} with method {self.method!r} and "
                             f"classifier {self.classifier!r}")


def hidden_width(params: TrainParams, default: int) -> int:
    """``params.hidden``, or the method's ``default`` when it is 0."""
    return params.hidden or default


MLP_HIDDEN = 128  # the default width of the "mlp" classifier's hidden layer


@dataclass(frozen=True)
class Examples:
    """Training samples: ``inputs[s]`` the SNN input indices (int64, time order) of sample s,
    ``y[s]`` its class index into ``classes``; ``spec`` the features that made them."""

    inputs: list
    y: np.ndarray
    classes: tuple
    spec: FeatureSpec

    def rows(self, fractions=PREFIXES) -> tuple[np.ndarray, np.ndarray]:
        """Prefix training rows (features in spikes per input event, each row sums to 1) and
        their classes: every sample at every fraction, fraction-major, so the last
        ``len(inputs)`` rows are the whole samples."""
        return (feature_matrix(self.inputs, self.spec.n_inputs, fractions),
                np.tile(self.y, len(fractions)))

    def tile_rows(self, columns: np.ndarray, n_columns: int,
                  fractions=PREFIXES) -> np.ndarray:
        """The rows of ``rows`` as tile counts (``features.tile_columns``): each tiling's counts
        per input event, the tilings side by side (each tiling's block sums to 1)."""
        x = np.zeros((len(fractions) * len(self.inputs), n_columns))
        for tiling in columns:
            x += feature_matrix([tiling[idx] for idx in self.inputs], n_columns, fractions)
        return x

    def snn(self, weights, convs=()) -> SnnModel:
        """IF layers (threshold 1, reset by subtraction) over ``weights`` (``convs`` as
        ``convert.ann_activations``), this input mapping."""
        s = self.spec
        return to_snn(weights, self.classes, s.width, s.height, s.cell, s.n_prototypes, convs)


@dataclass(frozen=True)
class Trained:
    """A method's result: the SNN the core runs and what goes into ``training`` (JSON-able)."""

    model: SnnModel
    info: dict


def batches(n: int, params: TrainParams, rng: np.random.Generator, desc: str = "",
            rows: np.ndarray | None = None):
    """Row indices of each mini-batch: ``params.epochs`` passes over ``rows`` (default: all
    ``n`` rows), each in a new order drawn from ``rng``, ``params.batch`` rows at a time; a
    progress bar counts epochs."""
    rows = np.arange(n) if rows is None else rows
    for _ in tqdm(range(params.epochs), desc=desc, unit="epoch", disable=None if desc else True,
                  leave=False):
        order = rows[rng.permutation(len(rows))]
        for start in range(0, len(rows), params.batch):
            yield order[start:start + params.batch]


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, params: TrainParams,
        desc: str = "", rows: np.ndarray | None = None) -> list[np.ndarray]:
    """Bias-free weights (one matrix for softmax regression, two for the ReLU network) trained
    with Adam on mean cross-entropy + l2/2 |W|^2 over the rows ``rows`` of ``x`` (default: all;
    an index may repeat). Inputs are scaled by sqrt(n_features) during training (a conditioning
    choice), folded back into the first matrix afterwards."""
    rng = np.random.default_rng(params.seed)
    scale = np.sqrt(x.shape[1])
    hidden = [hidden_width(params, MLP_HIDDEN)] if params.classifier == "mlp" else []
    sizes = [x.shape[1]] + hidden + [n_classes]
    weights = [rng.normal(0, np.sqrt(2.0 / a), (a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    onehot = np.eye(n_classes)[y]
    for step, batch in enumerate(batches(len(x), params, rng, desc, rows), 1):
        acts = [x[batch] * scale]
        for l, w in enumerate(weights):
            a = acts[-1] @ w
            acts.append(np.maximum(a, 0.0) if l < len(weights) - 1 else a)
        p = np.exp(acts[-1] - acts[-1].max(axis=1, keepdims=True))
        delta = (p / p.sum(axis=1, keepdims=True) - onehot[batch]) / len(batch)
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


def bagged(x: np.ndarray, y: np.ndarray, n_samples: int, n_classes: int, params: TrainParams,
           desc: str = "") -> list[np.ndarray]:
    """``fit``, or with ``params.ensemble`` = N > 1 bagging (Breiman 1996) of the one-hidden-layer
    network: N networks, network i trained with seed ``params.seed + 1 + i`` on a bootstrap
    resample of the ``n_samples`` training samples (drawn with replacement; a drawn sample brings
    all its prefix rows, ``x`` being fraction-major as ``Examples.rows`` makes it), joined into
    one network: the hidden layers side by side (N x width units) and the output weights stacked
    and divided by N, so its logits are the mean of the N networks' logits. It is still one
    bias-free ReLU layer, converted like one network."""
    if params.ensemble == 1:
        return fit(x, y, n_classes, params, desc)
    rng = np.random.default_rng(params.seed)
    prefixes = np.arange(len(x) // n_samples)[:, None] * n_samples
    members = []
    for i in range(params.ensemble):
        drawn = rng.integers(0, n_samples, n_samples)
        members.append(fit(x, y, n_classes, replace(params, seed=params.seed + 1 + i),
                           f"{desc} {i + 1}/{params.ensemble}" if desc else "",
                           (drawn + prefixes).ravel()))
    return [np.hstack([w1 for w1, _ in members]),
            np.vstack([w2 for _, w2 in members]) / params.ensemble]


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside the block: the small matrices of these networks gain nothing
    from more, and lose much on a machine whose cores are busy."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose largest logit (ties: lower index) is the class in ``y``."""
    return float(np.mean(np.argmax(logits, axis=1) == y))


def conversion(examples: Examples, params: TrainParams, desc: str = "") -> Trained:
    """Review 3.2: the classifier trained on prefix rows, normalised (data-based, Diehl et al.
    2015) and converted to IF layers. With ``params.tile`` > 1 it is trained on tile counts
    (``Examples.tile_rows``); a tile's count is the sum of its cells' counts, so the first layer
    over the cells, each cell's row the sum of the rows of the tiles holding it, computes the same
    activations, and the SNN keeps one input per cell and prototype. The "conv" classifier is
    ``pipeline.learn.convnet``'s network, its conv layers run as conv layers of the core."""
    x, y = examples.rows()
    if params.classifier == "conv":
        # imported here: it brings torch, which the other classifiers do not need
        from pipeline.learn import convnet

        weights, convs = convnet.fit(x, y, len(examples.classes), examples.spec.input_map,
                                     hidden_width(params, convnet.CONV_WIDTH),
                                     batches(len(x), params, np.random.default_rng(params.seed),
                                             desc), params.lr, params.l2, params.seed)
    else:
        columns, n_columns = tile_columns(examples.spec, params.tile)
        tiled = x if params.tile == 1 else examples.tile_rows(columns, n_columns)
        weights = bagged(tiled, y, len(examples.inputs), len(examples.classes), params, desc)
        weights[0] = weights[0][columns].sum(axis=0)
        convs = ()
    scaled, lambdas = normalise(weights, x, params.percentile, convs)
    full = x[-len(examples.inputs):]
    return Trained(examples.snn(scaled, convs), {
        "lambdas": lambdas,
        "train_accuracy_ann": accuracy(ann_logits(scaled, full, convs), examples.y)})
