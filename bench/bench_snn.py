"""The exact event-driven SNN against snnTorch used as its users use it, and against its rate goal.

Peer rows run the shipped model (``recordings/model.npz``: 2304 feature inputs -> 10 IF neurons,
threshold 1, reset by subtraction) on 100 N-MNIST training samples, 10 per class, turned into the
model's feature events by the denoise and hots stages as ``FeatureSpec.stages`` builds them, each
event mapped to an input neuron as the snn stage maps it. Features are made once, untimed; both
sides get the same input ready (ours: time-sorted input indices; snnTorch: its tensors).

- streaming: the replay's 1 ms packets one by one, batch 1, the state carried from packet to
  packet and reset at each sample start. Ours: one ``lif.run`` per packet, as the snn stage calls
  it. snnTorch: one step per packet, ``nn.Linear`` then ``snn.Leaky`` with the membrane passed
  along, the input tensor and a ones vector allocated once (``zero_`` and ``index_add_`` per
  packet), as a careful user writes a real-time loop.
- offline: the 100 samples as one batch. Ours: one ``lif.run`` per sample from rest. snnTorch: a
  dense [steps, 100, 2304] tensor of the events counted per step (what tonic's ``ToFrame`` and
  ``PadTensors`` give a user; built untimed), evaluated as in the snnTorch tutorials and
  NeuroBench's snnTorch wrapper: ``nn.Sequential(nn.Linear, snn.Leaky(init_hidden=True,
  output=True))``, ``utils.reset``, one call per step, output spikes stacked; at dt = 1 ms and
  100 us.

snnTorch runs with ``torch.set_num_threads(1)`` under ``torch.no_grad()``, same weights and
thresholds, beta = exp(-dt / tau) (1 for IF layers). Every measurement, ours and peer alike, is
one warm-up call then the median wall time of ``REPEATS`` calls. Each row reports both sides'
output spike counts and the share of samples whose spike-count leader (most output spikes,
lowest index on ties) is the same on both sides.

The conv row runs one event-driven conv layer (``kernels.conv``: 2 x 34 x 34 raw N-MNIST events
-> 16 x 34 x 34 LIF neurons, 3 x 3 kernel, padding 1, tau 20 ms, reset by subtraction, seeded
random kernel) on ``CONV_SAMPLES`` samples in 1 ms packets, reset at each sample start, beside
the same layer clock-driven as torch users write it: per 1 ms step of each sample, the events
counted into a [1, 2, 34, 34] frame (frames built untimed), ``nn.Conv2d`` then ``snn.Leaky``
with the membrane carried along.

The target row runs the kernel alone on raw N-MNIST events through a seeded random
2312 -> 256 -> 10 LIF network (tau 20 ms, reset by subtraction, threshold 1): synaptic events
(256 per input event plus 10 per hidden spike) per second against a goal of 1e9.
"""

from __future__ import annotations

import json
import math
import pathlib
import time

import numpy as np

from bench.common import RECORDINGS
from kernels import lif
from kernels.conv import ConvShape
from kernels.snn_input import map_inputs
from pipeline.core.model import load_model
from pipeline.core.stage import run_chain
from pipeline.learn.features import FeatureSpec, labelled_files, replay_packets
from sensors.readers import read_all

TRAIN = RECORDINGS / "nmnist" / "Train"
MODEL = pathlib.Path(__file__).resolve().parent.parent / "recordings" / "model.npz"
N_SAMPLES = 100  # 10 per class
OFFLINE_DT_US = (1000, 100)
REPEATS = 5  # timed calls per measurement, after one warm-up call; the median is reported
SYNAPTIC_GOAL = 1e9  # syn ev/s
TAU_US = 20_000.0  # the random rate-goal network
GAP_US = 50_000
CONV_SAMPLES = 40  # 4 per class
CONV_CHANNELS = 16  # output channels of the conv row's layer, 3 x 3 kernel, padding 1


# ---- input: the shipped model's feature events ---------------------------------------------

def feature_samples(n_samples: int = N_SAMPLES):
    """(model, samples): per sample its label and its packets as the snn stage receives them,
    each ``(segment start, t_first, t int64, input index int64)``; dropped events removed."""
    model = load_model(str(MODEL))
    spec = FeatureSpec(**json.loads(str(np.load(MODEL, allow_pickle=False)["training"]))[
        "features"])
    files = labelled_files(TRAIN)
    per_class = n_samples // 10
    chosen = [f for label in sorted({f.label for f in files})
              for f in [g for g in files if g.label == label][:per_class]]
    packets = run_chain(replay_packets(chosen, spec.packet_us), spec.stages(str(MODEL)))
    samples, by_id = [], {}
    for packet in packets:
        header, records = packet.header, packet.records
        segment = header.segment
        if segment.id not in by_id:
            by_id[segment.id] = len(samples)
            samples.append({"label": int(segment.label), "packets": []})
        idx = np.empty(len(records), np.int64)
        map_inputs(records["x"], records["y"], records["f"], model.width, model.height,
                   model.cell, model.channels, idx)
        keep = idx >= 0
        t = np.ascontiguousarray(records["t"][keep], np.int64)
        samples[by_id[segment.id]]["packets"].append(
            (bool(segment.start), int(header.t_first), t, idx[keep]))
    for sample in samples:
        pieces = sample["packets"]
        sample["t"] = np.concatenate([p[2] for p in pieces])
        sample["idx"] = np.concatenate([p[3] for p in pieces])
    return model, samples


# ---- timing ---------------------------------------------------------------------------------

def timed(fn, repeats: int = REPEATS, cpu: list | None = None):
    """(median wall seconds of ``repeats`` calls after one warm-up call, the last result); the
    median CPU seconds of this thread is appended to ``cpu`` when given."""
    result = fn()
    walls, cpus = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.thread_time() - start_cpu)
    if cpu is not None:
        cpu.append(float(np.median(cpus)))
    return float(np.median(walls)), result


def leaders(counts: np.ndarray) -> np.ndarray:
    """Per sample, the output neuron with most spikes (lowest index on ties)."""
    return np.argmax(counts, axis=1)


# ---- ours -----------------------------------------------------------------------------------

def exact_streaming(net, samples):
    """A function running every packet through ``lif.run`` (reset at each sample start), and one
    turning its result into output spike counts per sample."""
    last = len(net.sizes) - 2
    packets = [(s, p) for s, sample in enumerate(samples) for p in sample["packets"]]

    def run():
        state = lif.init_state(net)
        out = []
        for _, (start, t_first, t, idx) in packets:
            if start:
                lif.reset_state(net, state, t_first)
            out.append(lif.run(net, state, t, idx))
        return out

    def counts(out):
        c = np.zeros((len(samples), int(net.sizes[-1])), np.int64)
        for (s, _), spikes in zip(packets, out):
            np.add.at(c[s], spikes["neuron"][spikes["layer"] == last], 1)
        return c

    return run, counts


def exact_offline(net, samples):
    """A function running each sample from rest in one ``lif.run``, and its spike counter."""
    last = len(net.sizes) - 2

    def run():
        state = lif.init_state(net)
        out = []
        for sample in samples:
            t = sample["t"]
            lif.reset_state(net, state, int(t[0]) if len(t) else 0)
            out.append(lif.run(net, state, t, sample["idx"]))
        return out

    def counts(out):
        return np.array([np.bincount(spikes["neuron"][spikes["layer"] == last],
                                     minlength=int(net.sizes[-1])) for spikes in out])

    return run, counts


# ---- snnTorch -------------------------------------------------------------------------------

def _torch():
    import snntorch as snn
    import torch

    torch.set_num_threads(1)
    return snn, torch


def _layers(model, dt_us: int):
    """Per layer (weight as nn.Linear wants it [out, in], beta, threshold)."""
    out = []
    for w, theta, tau in zip(model.weights, model.thresholds, model.taus_us):
        beta = 1.0 if math.isinf(tau) else math.exp(-dt_us / tau)
        theta = np.asarray(theta, np.float64)
        out.append((np.ascontiguousarray(np.asarray(w, np.float32).T), beta,
                    float(theta[0]) if np.all(theta == theta[0]) else theta.astype(np.float32)))
    return out


def _check_peer_model(model):
    if any(r != "subtract" for r in model.resets) or any(int(r) for r in model.refractory_us) \
            or any(np.any(np.asarray(b) != 0) for b in model.biases):
        raise ValueError("the snnTorch peer is built for reset by subtraction, no refractory "
                         "period and no bias")


def snntorch_streaming(model, samples, dt_us: int = 1000):
    """A real-time snnTorch loop: batch 1, one step per packet, membranes carried along and
    reset at each sample start; input tensor and ones vector allocated once."""
    snn, torch = _torch()
    _check_peer_model(model)
    fcs, lifs = [], []
    with torch.no_grad():
        for w, beta, theta in _layers(model, dt_us):
            fc = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            fc.weight.copy_(torch.from_numpy(w))
            fcs.append(fc)
            lifs.append(snn.Leaky(beta=beta, threshold=theta if isinstance(theta, float)
                                  else torch.from_numpy(theta), reset_mechanism="subtract"))
    n_in = fcs[0].in_features
    packets = [(s, start, torch.from_numpy(idx)) for s, sample in enumerate(samples)
               for start, _, _, idx in sample["packets"]]
    x = torch.zeros(1, n_in)
    ones = torch.ones(max(len(p[2]) for p in packets))

    def run():
        out = []
        mems = [torch.zeros(1, fc.out_features) for fc in fcs]
        with torch.no_grad():
            for _, start, idx in packets:
                if start:
                    mems = [torch.zeros(1, fc.out_features) for fc in fcs]
                x.zero_()
                x[0].index_add_(0, idx, ones[:len(idx)])
                spk = x
                for layer, (fc, neuron) in enumerate(zip(fcs, lifs)):
                    spk, mems[layer] = neuron(fc(spk), mems[layer])
                out.append(spk)
        return out

    def counts(out):
        c = np.zeros((len(samples), fcs[-1].out_features), np.int64)
        for (s, _, _), spk in zip(packets, out):
            c[s] += spk[0].numpy().astype(np.int64)
        return c

    return run, counts


def dense_batch(samples, n_in: int, dt_us: int):
    """[steps, batch, n_in] float32: the input events of each sample counted per ``dt_us`` step
    of its own clock (padded with zeros to the longest sample)."""
    _, torch = _torch()
    steps = max(int(s["t"][-1] - s["t"][0]) // dt_us + 1 for s in samples)
    data = torch.zeros(steps, len(samples), n_in)
    for b, sample in enumerate(samples):
        step = torch.from_numpy((sample["t"] - sample["t"][0]) // dt_us)
        data.index_put_((step, torch.full_like(step, b), torch.from_numpy(sample["idx"])),
                        torch.ones(len(step)), accumulate=True)
    return data


def snntorch_offline(model, data, dt_us: int):
    """A batched snnTorch evaluation of ``data`` ([steps, batch, inputs]) as its tutorials write
    it, and its spike counter."""
    snn, torch = _torch()
    from snntorch import utils
    _check_peer_model(model)
    modules = []
    for w, beta, theta in _layers(model, dt_us):
        fc = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            fc.weight.copy_(torch.from_numpy(w))
        modules += [fc, snn.Leaky(beta=beta, threshold=theta if isinstance(theta, float)
                                  else torch.from_numpy(theta), reset_mechanism="subtract",
                                  init_hidden=True, output=True)]
    net = torch.nn.Sequential(*modules)
    net.eval()

    def run():
        with torch.no_grad():
            utils.reset(net)
            spk_rec = []
            for step in range(data.size(0)):
                spk, _ = net(data[step])
                spk_rec.append(spk)
            return torch.stack(spk_rec)

    def counts(out):
        return out.sum(0).numpy().astype(np.int64)

    return run, counts


# ---- the rate goal (random network, raw events) ---------------------------------------------

def nmnist_stream(n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(t us, input index) of ``n_samples`` raw samples (spread over the classes) back to back."""
    files = sorted(TRAIN.glob("*/*.bin"))
    files = files[:: max(1, len(files) // n_samples)][:n_samples]
    ts, idxs, offset = [], [], 0
    for path in files:
        events = read_all(path)[1]
        idx = np.empty(len(events), np.int64)
        map_inputs(events["x"], events["y"], events["p"], 34, 34, 1, 2, idx)
        t = events["t"].astype(np.int64) - int(events["t"][0]) + offset
        offset = int(t[-1]) + GAP_US
        ts.append(t)
        idxs.append(idx)
    return np.concatenate(ts), np.concatenate(idxs)


def random_network():
    rng = np.random.default_rng(0)
    w1 = rng.normal(0.01, 0.08, (2312, 256)).astype(np.float32)
    w2 = rng.normal(0.02, 0.2, (256, 10)).astype(np.float32)
    return lif.make_network([w1, w2], 1.0, TAU_US, "subtract")


def exact_goal(net, t, idx, repeats: int):
    """(wall seconds, CPU seconds of this thread, hidden spikes, output spikes) of one kernel call
    over the whole stream, medians of ``repeats`` runs from the initial state after a warm-up
    run. The output buffers are allocated and written (np.ones) before timing: no page faults
    inside the timed call."""
    buffers = [np.ones(len(t) * 8, dtype) for dtype in (np.int64, np.int32, np.int16, np.float32,
                                                        np.int64)]
    walls, cpus = [], []
    for run in range(repeats + 1):
        state, resume = lif.init_state(net, 0), np.zeros(lif.RESUME_SIZE, np.int64)
        start, start_cpu = time.perf_counter(), time.thread_time()
        written = lif._run(*net, *state, t, idx, *buffers, 0, resume)
        if run:
            walls.append(time.perf_counter() - start)
            cpus.append(time.thread_time() - start_cpu)
        assert not resume[lif.PENDING], "output buffers too small for the bench stream"
    layers = np.bincount(buffers[2][:written], minlength=2)
    return float(np.median(walls)), float(np.median(cpus)), int(layers[0]), int(layers[1])


# ---- the conv layer (raw events) ----------------------------------------------------------

def conv_layer():
    """(kernel (16, 2, 3, 3) float32, the packed one-layer network) of the conv row."""
    kernel = np.random.default_rng(0).normal(0.05, 0.3, (CONV_CHANNELS, 2, 3, 3))
    kernel = kernel.astype(np.float32)
    return kernel, lif.make_network([kernel], 1.0, TAU_US, "subtract",
                                    convs=[ConvShape((2, 34, 34), 1, 1)])


def conv_samples(n_samples: int) -> list[dict]:
    """Per raw sample (spread over the classes): its 1 ms packets ``(t us, input index)`` from
    its first event, and its events' step (1 ms), polarity, y and x for the frames."""
    files = sorted(TRAIN.glob("*/*.bin"))
    samples = []
    for path in files[:: max(1, len(files) // n_samples)][:n_samples]:
        events = read_all(path)[1]
        idx = np.empty(len(events), np.int64)
        map_inputs(events["x"], events["y"], events["p"], 34, 34, 1, 2, idx)
        t = events["t"].astype(np.int64)
        step = (t - t[0]) // 1000
        cuts = np.flatnonzero(np.diff(step)) + 1
        samples.append({"packets": list(zip(np.split(t, cuts), np.split(idx, cuts))),
                        "step": step, "p": events["p"].astype(np.int64),
                        "y": events["y"].astype(np.int64), "x": events["x"].astype(np.int64)})
    return samples


def exact_conv(net, samples):
    """A function running every packet through ``lif.run`` (reset at each sample start), and one
    counting its spikes per sample."""
    def run():
        state = lif.init_state(net)
        out = []
        for sample in samples:
            lif.reset_state(net, state, int(sample["packets"][0][0][0]))
            out.append([lif.run(net, state, t, idx)["t"].size for t, idx in sample["packets"]])
        return out

    return run, lambda out: np.array([[sum(counts)] for counts in out])


def torch_conv(kernel, samples):
    """The same layer clock-driven at 1 ms: per sample, every step's event-count frame through
    ``nn.Conv2d`` (no bias) and ``snn.Leaky`` (beta = exp(-1 ms / tau), reset by subtraction),
    and its spike counter."""
    snn, torch = _torch()
    conv = torch.nn.Conv2d(2, CONV_CHANNELS, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(kernel))
    neuron = snn.Leaky(beta=math.exp(-1000 / TAU_US), threshold=1.0, reset_mechanism="subtract")
    frames = []
    for sample in samples:
        data = torch.zeros(int(sample["step"][-1]) + 1, 1, 2, 34, 34)
        index = (torch.from_numpy(sample["step"]), torch.zeros(len(sample["step"]), dtype=torch.long),
                 *(torch.from_numpy(sample[key]) for key in ("p", "y", "x")))
        data.index_put_(index, torch.ones(len(sample["step"])), accumulate=True)
        frames.append(data)

    def run():
        out = []
        with torch.no_grad():
            for data in frames:
                mem, spikes = torch.zeros(1, CONV_CHANNELS, 34, 34), 0
                for step in range(data.size(0)):
                    spk, mem = neuron(conv(data[step]), mem)
                    spikes += int(spk.sum())
                out.append(spikes)
        return out

    return run, lambda out: np.array([[spikes] for spikes in out])


def conv_row(n_samples: int = CONV_SAMPLES) -> dict:
    """The conv row: both sides timed as the other peer rows, rates in input events/s."""
    kernel, net = conv_layer()
    samples = conv_samples(n_samples)
    cpu = []
    ours_s, ours = timed(exact_conv(net, samples)[0], cpu=cpu)
    peer_s, peer = timed(torch_conv(kernel, samples)[0], cpu=cpu)
    events = sum(len(sample["step"]) for sample in samples)
    packets = sum(len(sample["packets"]) for sample in samples)
    steps = sum(int(sample["step"][-1]) + 1 for sample in samples)
    # synaptic events: the neurons each input event reaches (edge pixels reach fewer)
    reach = np.ones((34, 34))
    reach[[0, -1], :] *= 2 / 3
    reach[:, [0, -1]] *= 2 / 3
    synaptic = sum(float(reach[s["y"], s["x"]].sum()) for s in samples) * 9 * CONV_CHANNELS
    return {
        "name": f"snn conv layer 2x34x34 -> {CONV_CHANNELS}x34x34 (3x3), 1 ms packets, batch 1, "
                f"vs torch Conv2d + snnTorch Leaky at dt=1ms",
        "ours": events / ours_s, "peer": events / peer_s, "unit": "ev/s",
        "ratio": peer_s / ours_s, "target": None, "samples": n_samples, "input_events": events,
        "packets": packets, "steps": steps, "runs": REPEATS, "ours_s": ours_s, "peer_s": peer_s,
        "ours_cpu_s": cpu[0], "peer_cpu_s": cpu[1], "cpu_ratio": cpu[1] / cpu[0],
        "ours_synaptic_per_s": synaptic / ours_s,
        "exact_spikes": int(sum(sum(counts) for counts in ours)),
        "snntorch_spikes": int(sum(peer)),
    }


# ---- rows -----------------------------------------------------------------------------------

def compare(name: str, ours, peer, samples, target: float | None, **extra) -> dict:
    """One peer row: both sides timed the same way, rates in input events/s, spike counts."""
    (ours_run, ours_counts), (peer_run, peer_counts) = ours, peer
    ours_s, ours_out = timed(ours_run)
    peer_s, peer_out = timed(peer_run)
    a, b = ours_counts(ours_out), peer_counts(peer_out)
    labels = np.array([s["label"] for s in samples])
    events = sum(len(s["t"]) for s in samples)
    return {
        "name": name, "ours": events / ours_s, "peer": events / peer_s, "unit": "ev/s",
        "ratio": peer_s / ours_s, "target": target,
        "samples": len(samples), "input_events": events, "runs": REPEATS,
        "ours_s": ours_s, "peer_s": peer_s,
        "exact_output_spikes": int(a.sum()), "snntorch_output_spikes": int(b.sum()),
        "leader_agreement": float(np.mean(leaders(a) == leaders(b))),
        "exact_leader_accuracy": float(np.mean(leaders(a) == labels)),
        "snntorch_leader_accuracy": float(np.mean(leaders(b) == labels)),
        **extra,
    }


def run() -> list[dict]:
    model, samples = feature_samples()
    net = model.net
    n_in = int(net.sizes[0])
    packets = sum(len(s["packets"]) for s in samples)
    results = [compare("snn streaming 1 ms packets, batch 1, vs snnTorch", exact_streaming(
        net, samples), snntorch_streaming(model, samples), samples, None, packets=packets)]
    for dt_us in OFFLINE_DT_US:
        data = dense_batch(samples, n_in, dt_us)
        results.append(compare(
            f"snn offline 100 samples vs snnTorch batch 100, dt={dt_us}us",
            exact_offline(net, samples), snntorch_offline(model, data, dt_us), samples,
            5.0 if dt_us == 100 else None, steps=int(data.size(0))))
        del data

    results.append(conv_row())

    goal_net = random_network()
    t, idx = nmnist_stream(200)
    exact_goal(goal_net, t[:100], idx[:100], 1)  # compile
    seconds, cpu_seconds, hidden, output = exact_goal(goal_net, t, idx, REPEATS)
    synaptic = len(t) * 256 + hidden * 10
    results.append({
        "name": "snn exact kernel synaptic events/s (2312-256-10 random)",
        "ours": synaptic / seconds, "peer": None, "unit": "syn ev/s", "ratio": None,
        "target": SYNAPTIC_GOAL, "input_events": len(t), "hidden_spikes": hidden,
        "output_spikes": output, "runs": REPEATS, "ours_cpu_time": synaptic / cpu_seconds,
    })
    return results
