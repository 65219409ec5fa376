"""Surrogate-gradient training of a multi-layer LIF network on raw events.

Follows Neftci, Mostafa and Zenke 2019 ("Surrogate gradient learning in spiking neural networks",
IEEE Signal Processing Magazine 36:51) as snnTorch implements it: the network is simulated
clock-driven in torch (CPU), one step per ``step_us`` us, and trained by backpropagation through
time, the derivative of the Heaviside spike function being replaced by the fast sigmoid's,
``1 / (1 + slope * |v - theta|)**2`` (SuperSpike, Zenke and Ganguli 2018).

Network: raw events (input index ``(y * width + x) * 2 + p``, ``kernels.snn_input`` with cell 1,
channels 2) -> ``hidden`` LIF neurons -> one LIF neuron per class, dense weights, no biases,
threshold 1, reset by subtraction, membrane time constant ``tau_us`` in every layer. One step of
the clock-driven simulation::

    v <- beta * v + I,   beta = exp(-step_us / tau_us)   (the exact decay over one step)
    s = H(v - theta);    v <- v - s * theta

where ``I`` sums the weights of every input spike of the step. The exact core (``kernels.lif``)
runs the same network event by event; the two differ in that the clock-driven step sums all the
inputs of a step before its single threshold test (one spike per neuron and step at most).

Loss: cross-entropy of the cumulative output spike counts, used as logits, after the fractions
``PREFIXES`` of each sample's steps, averaged: a class that spikes early and right lowers every
term, so the network learns to decide early.

The trained network is written as a NIR graph and read back (``pipeline.learn.nir``) into an
``evpipe-snn/1`` model, whose exact run is scored beside the clock-driven simulation
(``gap``).

``fit`` (``evpipe train --method surrogate``, ``pipeline.learn.methods``) trains on the HOTS
feature spikes, with IF layers and steps counted in input events, since those spikes come without
their times: the conversion method's two-layer network fine-tuned with the same surrogate
gradients and prefix loss (hybrid conversion and spike-based training, Rathi et al. 2020);
``feature_gap`` scores such a model both ways. Figures:
docs/training.md, "Surrogate gradients".
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
from tqdm import tqdm

from kernels import lif
from kernels.snn_input import map_inputs, n_inputs
from pipeline.core.model import SnnModel, load_model, read_training
from pipeline.learn import nir as nir_io
from pipeline.learn.classifier import Examples, Trained, TrainParams, conversion
from pipeline.learn.features import FeatureSpec, extract
from sensors.readers import read_all
from sensors.replay import SegmentFile

PREFIXES = (0.25, 0.5, 0.75, 1.0)  # fractions of a sample's steps at which the loss is taken
WIDTH, HEIGHT, CHANNELS = 34, 34, 2  # N-MNIST: 34 x 34 pixels, two polarities


@dataclass(frozen=True)
class SurrogateParams:
    """hidden: hidden LIF neurons; step_us: clock-driven step (us); tau_us: membrane time constant
    of every layer (us); epochs, batch, lr: Adam (Kingma and Ba 2015) over shuffled batches;
    slope: steepness of the fast-sigmoid surrogate (1/potential); shift: each training sample is
    moved by a random whole number of pixels in [-shift, shift] along x and y at every epoch
    (augmentation); cell: pixels per input cell side (``kernels.snn_input``); l2: Adam's weight
    decay; logit_scale: the output spike counts times this are the logits of the prefix loss;
    seed: weights, batch order and shifts; threads: torch CPU threads (1: the steps are small,
    and a second thread waits on the first whenever the machine is busy)."""

    hidden: int = 128
    step_us: int = 1000
    tau_us: float = 20_000.0
    epochs: int = 30
    batch: int = 32
    lr: float = 2e-3
    slope: float = 5.0
    shift: int = 2
    cell: int = 1
    l2: float = 0.0
    logit_scale: float = 1.0
    seed: int = 0
    threads: int = 1


@dataclass(frozen=True)
class Sample:
    """One sample as input spikes: ``t`` (int64 us, sorted), ``idx`` (int64 input index, -1:
    none), its class index ``label`` and, for raw events, ``pixels`` (int64 x, y, p rows) and the
    mapping's ``cell``, from which ``shifted`` moves it."""

    t: np.ndarray
    idx: np.ndarray
    label: int
    pixels: np.ndarray | None = None
    cell: int = 1

    def shifted(self, dx: int, dy: int) -> np.ndarray:
        """Input indices of the events moved by (dx, dy) pixels (-1 where they leave the sensor)."""
        if (dx == 0 and dy == 0) or self.pixels is None:
            return self.idx
        idx = np.empty(len(self.t), np.int64)
        x, y, p = self.pixels
        map_inputs(x + dx, y + dy, p, WIDTH, HEIGHT, self.cell, CHANNELS, idx)
        return idx


def load_samples(files: list[SegmentFile], classes: list[str], cell: int = 1,
                 desc: str = "") -> list[Sample]:
    """Read every file; its events (those inside the sensor) become raw-event input spikes."""
    samples = []
    for file in tqdm(files, desc=desc, unit="sample", disable=None if desc else True, leave=False):
        _, events = read_all(file.path)
        events = events[(events["x"] < WIDTH) & (events["y"] < HEIGHT)]
        pixels = np.stack([events[k].astype(np.int64) for k in "xyp"])
        idx = np.empty(len(events), np.int64)
        map_inputs(*pixels, WIDTH, HEIGHT, cell, CHANNELS, idx)
        samples.append(Sample(events["t"].astype(np.int64), idx, classes.index(file.label),
                              pixels, cell))
    return samples


def n_steps(sample: Sample, step_us: int) -> int:
    """Steps of the clock-driven simulation covering the sample, its first event in step 0."""
    return int((sample.t[-1] - sample.t[0]) // step_us) + 1 if len(sample.t) else 1


def _torch():
    try:
        import torch
    except ImportError:
        raise RuntimeError("surrogate training needs torch (pip install -e '.[test]')") from None
    return torch


def _spike_function(torch, slope: float):
    """Heaviside of ``v - theta`` forward, the fast sigmoid's derivative backward."""

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x >= 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad / (1.0 + slope * x.abs()) ** 2

    return Spike.apply


def input_currents(torch, samples: list[Sample], w0, step_us: int, shifts=None):
    """Summed layer-0 input per step, (batch, steps, n_hidden): a sparse (batch * steps) x
    n_inputs count matrix times ``w0``, each sample moved by its (dx, dy) of ``shifts``; and the
    number of steps of each sample."""
    steps = [n_steps(s, step_us) for s in samples]
    n = max(steps)
    shifts = [(0, 0)] * len(samples) if shifts is None else shifts
    rows = np.concatenate([b * n + (s.t - s.t[0]) // step_us for b, s in enumerate(samples)])
    cols = np.concatenate([s.shifted(*d) for s, d in zip(samples, shifts)])
    rows, cols = rows[cols >= 0], cols[cols >= 0]
    counts = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])),
                                     torch.ones(len(rows)), (len(samples) * n, w0.shape[0]),
                                     check_invariants=True).coalesce()
    return torch.sparse.mm(counts, w0).view(len(samples), n, -1), steps


def simulate(torch, spike, samples: list[Sample], weights, params: SurrogateParams, shifts=None):
    """The clock-driven run: output spikes (batch, steps, n_classes) and the output potentials
    after the last step (batch, n_classes)."""
    current, _ = input_currents(torch, samples, weights[0], params.step_us, shifts)
    beta = math.exp(-params.step_us / params.tau_us)
    v = [torch.zeros(len(samples), w.shape[1]) for w in weights]
    out = []
    for k in range(current.shape[1]):
        x = current[:, k]
        for l, w in enumerate(weights):
            v[l] = beta * v[l] + (x if l == 0 else x @ w)
            x = spike(v[l] - 1.0)
            v[l] = v[l] - x
        out.append(x)
    return torch.stack(out, 1), v[-1]


def prefix_logits(torch, spikes, steps: list[int]):
    """Cumulative output spike counts after each fraction of ``PREFIXES`` of every sample's own
    steps: (len(PREFIXES), batch, n_classes)."""
    cumulative = spikes.cumsum(1)
    rows = torch.arange(len(steps))
    return torch.stack([cumulative[rows, torch.tensor([max(math.ceil(f * n), 1) - 1
                                                       for n in steps])] for f in PREFIXES])


def decide(counts: np.ndarray, potentials: np.ndarray) -> np.ndarray:
    """The class of each row: most output spikes, ties by the higher potential, then the lower
    index (the decoder's forced rule, docs/snn.md)."""
    return np.array([np.lexsort((-v, -c))[0]
                     for c, v in zip(np.atleast_2d(counts), np.atleast_2d(potentials))])


def clock_accuracy(torch, spike, samples: list[Sample], weights, params: SurrogateParams,
                   desc: str = "") -> tuple[float, np.ndarray]:
    """Accuracy of the clock-driven simulation and its decisions."""
    decisions = []
    with torch.no_grad():
        for start in tqdm(range(0, len(samples), params.batch), desc=desc, unit="batch",
                          disable=None if desc else True, leave=False):
            part = samples[start:start + params.batch]
            spikes, v = simulate(torch, spike, part, weights, params)
            decisions.append(decide(spikes.sum(1).numpy(), v.numpy()))
    decisions = np.concatenate(decisions)
    return float(np.mean(decisions == [s.label for s in samples])), decisions


def exact_accuracy(model: SnnModel, samples: list[Sample],
                   desc: str = "") -> tuple[float, np.ndarray]:
    """Accuracy of the exact event-driven core (``kernels.lif``) on the same input spikes: the
    network reset at each sample's first event, decided on its output spike counts at its end."""
    net, last = model.net, model.n_layers - 1
    decisions = []
    for s in tqdm(samples, desc=desc, unit="sample", disable=None if desc else True, leave=False):
        state = lif.init_state(net, int(s.t[0]))
        spikes = lif.run(net, state, s.t, s.idx)
        counts = np.bincount(spikes["neuron"][spikes["layer"] == last],
                             minlength=len(model.classes))
        decisions.append(decide(counts, lif.potentials(net, state, last, int(s.t[-1])))[0])
    decisions = np.array(decisions)
    return float(np.mean(decisions == [s.label for s in samples])), decisions


def to_model(weights, params: SurrogateParams, classes: list[str]) -> SnnModel:
    """The trained weights as an ``evpipe-snn/1`` model of the raw-event mapping."""
    n = len(weights)
    return SnnModel(weights=tuple(w.detach().numpy().astype(np.float32) for w in weights),
                    thresholds=(1.0,) * n, biases=(0.0,) * n, taus_us=(params.tau_us,) * n,
                    resets=("subtract",) * n, refractory_us=(0,) * n, classes=tuple(classes),
                    input="events", width=WIDTH, height=HEIGHT, cell=params.cell,
                    channels=CHANNELS)


def initial_weights(torch, sizes: list[int], seed: int) -> list:
    """Uniform init of torch.nn.Linear (bound 1/sqrt(fan_in)), times a gain that makes the hidden
    layer fire from the first epoch; float32 tensors, (n_in, n_out) per layer."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(a, b, generator=generator) * 2 - 1) * (gain / math.sqrt(a))
            for (a, b), gain in zip(itertools.pairwise(sizes), (8.0, 4.0))]


def prefix_loss(torch, spike, part: list[Sample], weights, params: SurrogateParams, shifts=None):
    """The prefix cross-entropy of a batch: output spike counts times ``params.logit_scale`` as
    logits after each fraction of ``PREFIXES`` of every sample's steps, averaged."""
    spikes, _ = simulate(torch, spike, part, weights, params, shifts)
    logits = prefix_logits(torch, spikes, [n_steps(s, params.step_us) for s in part])
    labels = torch.tensor([s.label for s in part])
    return sum(torch.nn.functional.cross_entropy(z * params.logit_scale, labels)
               for z in logits) / len(logits)


def mean_loss(torch, spike, samples: list[Sample], weights, params: SurrogateParams) -> float:
    """``prefix_loss`` over ``samples`` (no gradient), per sample."""
    with torch.no_grad():
        return sum(prefix_loss(torch, spike, samples[i:i + params.batch], weights, params).item()
                   * len(samples[i:i + params.batch])
                   for i in range(0, len(samples), params.batch)) / len(samples)


def train_weights(torch, spike, samples: list[Sample], weights: list, params: SurrogateParams,
                  desc: str = "epoch", validation: list[Sample] = ()):
    """Adam on the prefix cross-entropy from ``weights`` (float32 tensors, (n_in, n_out) per
    layer), ``params.epochs`` passes over shuffled batches. With ``validation`` samples, the
    weights kept are those of the epoch (0: the initial ones) with the lowest prefix loss on them
    (early stopping). Returns the weights, the mean training loss per epoch and the validation
    loss per epoch from epoch 0 (empty without validation samples)."""
    weights = [w.detach().clone().requires_grad_() for w in weights]
    optimiser = torch.optim.Adam(weights, lr=params.lr, weight_decay=params.l2)
    rng = np.random.default_rng(params.seed)
    losses, checked = [], []
    best = [w.detach().clone() for w in weights]

    def check():
        if validation:
            checked.append(mean_loss(torch, spike, validation, weights, params))
            if checked[-1] == min(checked):
                best[:] = [w.detach().clone() for w in weights]

    check()
    for epoch in range(params.epochs):
        order, total = rng.permutation(len(samples)), 0.0
        with tqdm(range(0, len(samples), params.batch), desc=f"{desc} {epoch + 1}/{params.epochs}",
                  unit="batch", leave=False, disable=None if desc else True) as bar:
            for start in bar:
                part = [samples[i] for i in order[start:start + params.batch]]
                shifts = rng.integers(-params.shift, params.shift + 1, (len(part), 2))
                loss = prefix_loss(torch, spike, part, weights, params, shifts)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += loss.item() * len(part)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        losses.append(total / len(samples))
        check()
    return (best if validation else [w.detach() for w in weights]), losses, checked


@contextlib.contextmanager
def _torch_mode(torch, threads: int):
    """Torch as training wants it: ``threads`` threads and subnormal floats flushed to zero.
    Both settings are process-wide, so they are restored on exit: left on, flushing would change
    every later float computation of the process, the exact core's included."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(previous)


def _blas_threads(n: int):
    """numpy's BLAS limited to ``n`` threads inside the block (threadpoolctl, with torch in the
    test extras): on a busy machine the spare threads of the small products of a mini-batch
    wait for each other."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise RuntimeError("surrogate training needs threadpoolctl (pip install -e '.[test]')") \
            from None
    return threadpool_limits(limits=n, user_api="blas")


def train(files: list[SegmentFile], out: str, params: SurrogateParams,
          test_files: list[SegmentFile] = ()) -> dict:
    """Train on ``files``, write the model (through NIR) to ``out`` and return the training
    record (also stored in the model as ``training``): losses, training accuracy of the
    clock-driven and the exact run and, with ``test_files``, their held-out accuracies and
    ``gap`` (clock-driven minus exact)."""
    torch = _torch()
    torch.manual_seed(params.seed)
    started = time.perf_counter()
    classes = sorted({f.label for f in files})
    samples = load_samples(files, classes, params.cell, desc="read training samples")
    spike = _spike_function(torch, params.slope)
    sizes = [n_inputs(WIDTH, HEIGHT, params.cell, CHANNELS), params.hidden, len(classes)]
    with _torch_mode(torch, params.threads):
        weights, losses, _ = train_weights(torch, spike, samples,
                                           initial_weights(torch, sizes, params.seed), params)
    model = nir_io.from_nir(nir_io.to_nir(to_model(weights, params, classes)))
    record = {"method": "surrogate", "params": asdict(params), "classes": classes,
              "n_samples": len(samples), "losses": [round(x, 4) for x in losses],
              "train_seconds": round(time.perf_counter() - started, 1)}
    scored = {"train": samples}
    if test_files:
        scored["test"] = load_samples(test_files, classes, params.cell,
                                      desc="read held-out samples")
    for name, part in scored.items():
        with _torch_mode(torch, params.threads):
            clock, _ = clock_accuracy(torch, spike, part, weights, params,
                                      desc=f"{name}: clock-driven")
        exact, _ = exact_accuracy(model, part, desc=f"{name}: exact core")
        record[name] = {"n_samples": len(part), "accuracy_clock": clock, "accuracy_exact": exact,
                        "gap": round(clock - exact, 4)}
    record["seconds"] = round(time.perf_counter() - started, 1)
    model.save(out, extra={"training": np.array(json.dumps(record))})
    return record


EVENTS_PER_STEP = 16  # feature events per clock step when training on feature spikes (``fit``)
# ``fit``'s fine-tuning: a few epochs with a small step from the converted network; counts of a
# converted network reach a hundred spikes, so they are scaled down before the softmax (raw counts
# saturate it and leave the loss without gradient)
FINE_TUNE = {"epochs": 3, "lr": 2e-4, "batch": 64, "logit_scale": 0.1}
VALIDATION_SHARE = 0.1  # share of the training samples that picks the fine-tuning epoch


def validation_mask(y: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Samples held out for early stopping: the first ``share`` of each class in a seeded order
    (at least one per class)."""
    rng, held = np.random.default_rng(seed), np.zeros(len(y), bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        held[members[:max(1, round(share * len(members)))]] = True
    return held


def _subset(examples: Examples, mask: np.ndarray) -> Examples:
    """The samples of ``examples`` where ``mask`` is true, in their order."""
    return Examples([examples.inputs[i] for i in np.flatnonzero(mask)], examples.y[mask],
                    examples.classes, examples.spec)


def _feature_samples(inputs, labels) -> list[Sample]:
    """Feature spikes as samples whose time is the event's rank (they carry no times)."""
    return [Sample(np.arange(len(i), dtype=np.int64), np.asarray(i, np.int64), int(y))
            for i, y in zip(inputs, labels)]


def fit(examples: Examples, params: TrainParams, desc: str = "") -> Trained:
    """``evpipe train --method surrogate`` (``pipeline.learn.methods``) on the HOTS feature spikes
    of ``examples``: hybrid conversion and spike-based training (Rathi et al. 2020, ICLR,
    "Enabling Deep Spiking Neural Networks with Hybrid Conversion and Spike Timing Dependent
    Backpropagation"). The spikes carry their order but not their times, so the layers are IF
    (``tau = inf``: the exact run depends on the order of the inputs only) and a clock step is
    ``EVENTS_PER_STEP`` input events.

    1. ``VALIDATION_SHARE`` of the samples (per class) are held out;
    2. the conversion method (``pipeline.learn.classifier.conversion``, one hidden ReLU layer of
       ``hidden`` units, ``params``' epochs, batch, lr, l2 and percentile) on the others gives two
       normalised IF layers, firing at most about once per input event; the first layer's
       weights are divided by ``EVENTS_PER_STEP`` so that it fires at most about once per clock
       step (the clock-driven neuron fires once per step at most);
    3. surrogate-gradient fine-tuning of both layers with the prefix loss (``FINE_TUNE``), the
       epoch (0: the converted network) with the lowest prefix loss on the held-out samples kept;
    4. the network written as a NIR graph and read back into the model the core runs.

    Returns a ``Trained``; its ``train_accuracy_ann`` is the clock-driven simulation's accuracy on
    the samples it was fine-tuned on."""
    torch = _torch()
    torch.manual_seed(params.seed)
    held = validation_mask(examples.y, VALIDATION_SHARE, params.seed)
    tuned = _subset(examples, ~held)
    with _blas_threads(1):  # the small products of the ANN's batches gain nothing from more
        converted = conversion(tuned, replace(params, classifier="mlp"),
                               f"{desc}: conversion" if desc else "")
    sp = SurrogateParams(hidden=converted.model.weights[0].shape[1], step_us=EVENTS_PER_STEP,
                         tau_us=math.inf, shift=0, l2=0.0, seed=params.seed, **FINE_TUNE)
    samples = _feature_samples(tuned.inputs, tuned.y)
    held_out = _subset(examples, held)
    validation = _feature_samples(held_out.inputs, held_out.y)
    start = [torch.from_numpy(np.asarray(w, np.float32)) for w in converted.model.weights]
    start[0] = start[0] / EVENTS_PER_STEP
    spike = _spike_function(torch, sp.slope)
    with _torch_mode(torch, sp.threads):
        weights, losses, checked = train_weights(torch, spike, samples, start, sp,
                                                 f"{desc}: fine-tune" if desc else "", validation)
        clock, _ = clock_accuracy(torch, spike, samples, weights, sp)
    model = nir_io.from_nir(nir_io.to_nir(examples.snn([w.numpy() for w in weights])))
    return Trained(model, {
        "lambdas": converted.info["lambdas"], "train_accuracy_ann": clock,
        "converted_accuracy_ann": converted.info["train_accuracy_ann"],
        "surrogate": {k: v for k, v in asdict(sp).items() if k != "tau_us"},
        "losses": [round(x, 4) for x in losses],
        "validation_losses": [round(x, 4) for x in checked],
        "epoch": int(np.argmin(checked)), "n_validation": int(held.sum())})


def feature_gap(model_path, files: list[SegmentFile], desc: str = "") -> dict:
    """Accuracy on ``files`` of a model trained by ``fit`` (``evpipe train --method surrogate``):
    the clock-driven simulation it was trained in and the exact core, on the same HOTS feature
    spikes (the model's prototypes, ``pipeline.learn.features.extract``), and their ``gap``."""
    torch = _torch()
    model = load_model(model_path)
    training = read_training(model_path)
    with np.load(model_path, allow_pickle=False) as archive:
        prototypes = archive["hots_prototypes"]
    spec = FeatureSpec(**training["features"])
    inputs, labels = extract(files, spec, prototypes, desc=desc)
    sp = SurrogateParams(**{**training["surrogate"], "tau_us": math.inf})
    samples = _feature_samples(inputs, [list(model.classes).index(y) for y in labels])
    weights = [torch.from_numpy(np.asarray(w, np.float32)) for w in model.weights]
    with _torch_mode(torch, sp.threads):
        clock, _ = clock_accuracy(torch, _spike_function(torch, sp.slope), samples, weights, sp)
    exact, _ = exact_accuracy(model, samples)
    return {"n_samples": len(samples), "accuracy_clock": clock, "accuracy_exact": exact,
            "gap": round(clock - exact, 4)}
