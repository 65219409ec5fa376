"""Models as NIR graphs, and NIR graphs from other simulators as models.

NIR, the Neuromorphic Intermediate Representation (Pedersen et al. 2024, "Neuromorphic
intermediate representation: a unified instruction set for interoperable brain-inspired
computing", Nature Communications 15:8122), describes a network as a graph of continuous-time
primitives. A model of ``pipeline.core.model`` is written as the chain

    Input -> Linear | Conv2d -> LIF | IF -> ... -> Linear -> LIF | IF -> Output

(a ``Flatten`` between a conv layer and a dense one), and graphs of that form made by snnTorch,
Norse, Sinabs or Rockpool are read back. NIR lays maps out channel first, the core channel last
(``(y * W + x) * C + c``); conv layers' per-neuron values and the rows of a ``Linear`` after a
``Flatten`` are reordered both ways. The mapping (docs/snn.md, "NIR"), for neuron j of a layer,
times in seconds in NIR and in us here:

- ``LIF``: ``tau dv/dt = (v_leak - v) + r I``. An input spike through weight w is a pulse of one
  clock step ``dt_s`` (the convention of snnTorch's exporter and importer, which assume
  dt = 1e-4 s), so it raises v by ``w * r * dt_s / tau``. The exact core adds w itself, so the
  potential is measured in units of that jump ``s = r * dt_s / tau``: thresholds become
  ``v_threshold / s`` and the resting level ``(v_leak + r * b) / s``, b the bias of an ``Affine``
  before the layer; the weights are kept as they are. The bias current of the core is that
  resting level divided by ``tau_us``. ``tau_us = tau * 1e6 * time_scale``, ``time_scale`` the
  real duration of one clock step of the exporting simulator over ``dt_s``.
- ``IF``: ``dv/dt = r I``; a spike raises v by ``w * r`` (Sinabs and snnTorch); no bias.
- ``CubaLIF`` whose synaptic current lasts one step (``tau_syn <= dt_s``, snnTorch's
  ``Synaptic`` with alpha = 0) is a ``LIF`` whose jump is further scaled by
  ``w_in * dt_s / tau_syn``; a longer synaptic current has no counterpart in the core.
- Reset: ``v_reset`` = 0 is reset to zero; reset by subtraction has no NIR primitive, so it is
  stored in the neuron node's metadata (``reset = "subtract"``) or chosen on import
  (``reset``). A nonzero ``v_reset`` cannot be mapped.
- NIR fires when v > v_threshold, the core when v >= theta: they differ only on equality.

Our own export stores the exact float64 values (``tau_us``, ``bias_per_us``) and the input
mapping in the metadata as well; they are used on import when they still agree with the NIR
fields, so export -> import gives identical arrays.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from kernels.conv import ConvShape
from pipeline.core.model import INPUT_KINDS, SnnModel

DT_S = 1e-4  # s: the clock step that snnTorch's NIR exporter and importer assume
SNAP = 1e-9  # a jump scale within this relative distance of 1 is 1 (floating-point rounding)
MAPPING_KEYS = ("input", "width", "height", "cell", "channels")
RAW_NMNIST = {"input": "events", "width": 34, "height": 34, "cell": 1, "channels": 2}
NEURONS = ("LIF", "IF", "CubaLIF")
WHY_NOT = {
    "Conv1d": "the exact core's conv layers are two-dimensional",
    "SumPool2d": "the exact core has no pooling layers",
    "AvgPool2d": "the exact core has no pooling layers",
    "LI": "a leaky integrator never spikes; every layer of the core is a spiking layer",
    "CubaLI": "a leaky integrator never spikes; every layer of the core is a spiking layer",
    "I": "an integrator never spikes; every layer of the core is a spiking layer",
    "NIRGraph": "a nested (recurrent) subgraph; the core runs feed-forward layers",
    "Delay": "the core has no synaptic delays",
    "Threshold": "a bare threshold has no membrane; use IF or LIF",
    "Scale": "an element-wise scale between layers has no counterpart",
}


class NIRError(ValueError):
    """A NIR graph that cannot become a model of the exact core, or a model that NIR cannot hold."""


def _nir():
    try:
        import nir
    except ImportError:
        raise NIRError("NIR support needs the nir package (pip install -e '.[test]')") from None
    return nir


def _conv_out(kernel_shape, conv: ConvShape) -> tuple[int, int, int]:
    """(C, H, W) of a conv layer's neurons."""
    (_, h, w), (sy, sx), (py, px) = conv.in_shape, conv.stride, conv.padding
    return (int(kernel_shape[0]), (int(h) + 2 * int(py) - int(kernel_shape[2])) // int(sy) + 1,
            (int(w) + 2 * int(px) - int(kernel_shape[3])) // int(sx) + 1)


def _channels_first(values: np.ndarray, shape) -> np.ndarray:
    """Rows in the core's ``(y * W + x) * C + c`` order of a (C, H, W) layer, put in torch's."""
    c, h, w = shape
    values = np.asarray(values)
    return np.moveaxis(values.reshape(h, w, c, *values.shape[1:]), 2, 0).reshape(values.shape)


def to_nir(model: SnnModel):
    """The model as a ``nir.NIRGraph``: ``input``, then per layer ``linear{l}`` (weight
    ``(n_out, n_in)``, the transpose of ``w{l}``; after a conv layer a ``flatten{l}`` first) or
    ``conv{l}`` (the kernel; neurons shaped (C, H, W)) and ``lif{l}`` or ``if{l}``, then
    ``output``. Per-neuron values of conv layers are written in NIR's channel-first order."""
    nir = _nir()
    first = model.layer_conv(0)
    shape_in = np.array(first.in_shape) if first is not None else \
        np.array([np.shape(model.weights[0])[0]])
    nodes, edges, previous, shape = {"input": nir.Input(input_type=shape_in)}, [], "input", None
    for l in range(model.n_layers):
        if model.refractory_us[l]:
            raise NIRError(f"layer {l} has a refractory period of {model.refractory_us[l]} us; "
                           f"NIR neurons have none")
        conv, w = model.layer_conv(l), np.asarray(model.weights[l], np.float32)
        if conv is not None:
            if l and shape is None:
                raise NIRError(f"layer {l}: a conv layer after a dense one cannot be written")
            shape = _conv_out(w.shape, conv)
            nodes[f"conv{l}"] = nir.Conv2d(
                input_shape=tuple(int(v) for v in conv.in_shape[1:]), weight=w,
                stride=np.array(conv.stride), padding=np.array(conv.padding),
                dilation=np.array([1, 1]), groups=1, bias=np.zeros(w.shape[0], np.float32))
            edges.append((previous, f"conv{l}"))
            previous, n = f"conv{l}", int(np.prod(shape))
        else:
            if shape is not None:
                nodes[f"flatten{l}"] = nir.Flatten(input_type={"input": np.array(shape)},
                                                   start_dim=0)
                edges.append((previous, f"flatten{l}"))
                w, previous = _channels_first(w, shape), f"flatten{l}"
            nodes[f"linear{l}"] = nir.Linear(weight=np.ascontiguousarray(w.T))
            edges.append((previous, f"linear{l}"))
            previous, n, shape = f"linear{l}", w.shape[1], None
        out = shape or (n,)
        arrange = (lambda v: _channels_first(v, shape).reshape(shape)) if shape else (lambda v: v)
        theta = arrange(np.broadcast_to(np.asarray(model.thresholds[l], np.float64), (n,)).copy())
        bias = arrange(np.broadcast_to(np.asarray(model.biases[l], np.float64), (n,)).copy())
        meta = {"reset": model.resets[l]}
        tau_us = model.taus_us[l]
        if math.isinf(tau_us):
            neuron, name = nir.IF(r=np.ones(out), v_threshold=theta, v_reset=np.zeros(out),
                                  metadata=meta), f"if{l}"
        else:
            tau = np.full(out, tau_us / 1e6)
            meta.update(tau_us=float(tau_us), bias_per_us=bias)
            neuron, name = nir.LIF(tau=tau, r=tau / DT_S, v_leak=bias * tau_us, v_threshold=theta,
                                   v_reset=np.zeros(out), metadata=meta), f"lif{l}"
        nodes[name] = neuron
        edges.append((previous, name))
        previous = name
    nodes["output"] = nir.Output(output_type=np.array([len(model.classes)]))
    edges.append((previous, "output"))
    mapping = {key: getattr(model, key) for key in MAPPING_KEYS}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={
        "evpipe": json.dumps({**mapping, "classes": list(model.classes)})})


def write(model: SnnModel, path) -> None:
    """Write the model as a NIR file (HDF5)."""
    _nir().write(os.fspath(path), to_nir(model))


def read(path, **options) -> SnnModel:
    """Read a NIR file into a model (``from_nir`` with ``options``); errors name the file."""
    nir, path = _nir(), os.fspath(path)
    try:
        graph = nir.read(path, type_check=False)
    except (OSError, KeyError, ValueError, TypeError, AssertionError) as error:
        raise NIRError(f"{path}: not a readable NIR graph ({error})") from None
    try:
        return from_nir(graph, **options)
    except NIRError as error:
        raise NIRError(f"{path}: {error}") from None


def _text(value) -> str:
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode() if isinstance(value, bytes) else str(value)


def _chain(graph) -> list[str]:
    """The node names from the input to the output; NIRError unless the graph is one chain."""
    inputs = [k for k, node in graph.nodes.items() if type(node).__name__ == "Input"]
    if len(inputs) != 1:
        raise NIRError(f"the graph has {len(inputs)} Input nodes; the core takes one")
    after: dict[str, list[str]] = {}
    for source, target in graph.edges:
        after.setdefault(source, []).append(target)
    order = [inputs[0]]
    while order[-1] in after:
        targets = after[order[-1]]
        if len(targets) != 1 or targets[0] in order:
            raise NIRError(f"node {order[-1]!r} feeds {targets}; the core runs one feed-forward "
                           f"chain of layers")
        order.append(targets[0])
    if type(graph.nodes[order[-1]]).__name__ != "Output":
        raise NIRError(f"the chain from {inputs[0]!r} ends at {order[-1]!r}, not at an Output node")
    return order


def _uniform(values, what: str, name: str) -> float:
    values = np.asarray(values, np.float64).ravel()
    if not np.all(values == values[0]):
        raise NIRError(f"node {name!r}: {what} differs between neurons; the core has one per layer")
    return float(values[0])


def _neuron(node, name: str, bias: np.ndarray, dt_s: float, time_scale: float, reset: str | None):
    """(threshold, bias per us, tau_us, reset) of one layer from its NIR neuron node."""
    kind, meta = type(node).__name__, getattr(node, "metadata", {}) or {}
    n = np.asarray(node.v_threshold).size
    if np.any(np.asarray(node.v_reset) != 0):
        raise NIRError(f"node {name!r} ({kind}): reset to a nonzero potential cannot be mapped "
                       f"(the core resets to zero or by subtraction)")

    def per_neuron(values) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, np.float64).ravel(), (n,))

    r = per_neuron(node.r)
    layer_reset = reset or (_text(meta["reset"]) if "reset" in meta else "zero")
    if kind == "IF":
        if np.any(bias != 0):
            raise NIRError(f"node {name!r} (IF): a bias before a non-leaky layer cannot be mapped "
                           f"(the core's biases need a leak)")
        scale = r
        tau_us, rest = math.inf, np.zeros(n)
    else:
        tau = node.tau_mem if kind == "CubaLIF" else node.tau
        tau_s = _uniform(tau, "tau", name)
        scale = r * dt_s / tau_s
        if kind == "CubaLIF":
            tau_syn = per_neuron(node.tau_syn)
            if np.any(tau_syn > dt_s):
                raise NIRError(f"node {name!r} (CubaLIF): a synaptic current lasting more than one "
                               f"step (tau_syn {tau_syn.max()} s > dt {dt_s} s) has no counterpart "
                               f"in the core, whose inputs are instant jumps of the potential")
            scale = scale * per_neuron(node.w_in) * dt_s / tau_syn
        tau_us = tau_s * 1e6 * time_scale
        if "tau_us" in meta and float(meta["tau_us"]) / 1e6 == tau_s and time_scale == 1:
            tau_us = float(meta["tau_us"])
        rest = per_neuron(node.v_leak) + r * bias
    scale = np.where(np.abs(scale - 1) < SNAP, 1.0, scale)
    if np.any(scale <= 0):
        raise NIRError(f"node {name!r} ({kind}): an input must raise the potential (r > 0)")
    theta = np.asarray(node.v_threshold, np.float64).ravel() / scale
    per_us = np.zeros(n) if math.isinf(tau_us) else rest / scale / tau_us
    stored = meta.get("bias_per_us")
    stored = None if stored is None else np.asarray(stored, np.float64).ravel()
    if stored is not None and np.array_equal(stored * tau_us, rest) and np.all(scale == 1):
        per_us = stored
    return theta, per_us, tau_us, layer_reset


def _pair(value, what: str, node: str) -> tuple[int, int]:
    """A Conv2d's stride or padding as (rows, columns); string padding only as 'valid'."""
    if isinstance(value, str):
        if value != "valid":
            raise NIRError(f"node {node!r} (Conv2d): {what} {value!r} is not supported; give "
                           f"numbers or 'valid'")
        return 0, 0
    pair = np.broadcast_to(np.asarray(value, np.int64).ravel(), (2,))
    return int(pair[0]), int(pair[1])


def _channels_last(values: np.ndarray, shape) -> np.ndarray:
    """Rows of a (C, H, W) layer in torch's order, put in the core's ``(y * W + x) * C + c``."""
    c, h, w = shape
    return np.asarray(values).reshape(c, h, w, *np.shape(values)[1:]).swapaxes(0, 1).swapaxes(
        1, 2).reshape(c * h * w, *np.shape(values)[1:])


def _conv(node, name: str, shape) -> tuple[np.ndarray, ConvShape, np.ndarray, tuple]:
    """(kernel, conv shape, bias per neuron in torch's order, output (C, H, W)) of a Conv2d."""
    if shape is None:
        raise NIRError(f"node {name!r} (Conv2d) needs a (C, H, W) input before it")
    if np.any(np.asarray(node.dilation) != 1) or int(np.asarray(node.groups)) != 1:
        raise NIRError(f"node {name!r} (Conv2d): dilation and groups must be 1 (the core's conv "
                       f"layers have neither)")
    kernel = np.asarray(node.weight, np.float32)
    if kernel.ndim != 4 or kernel.shape[1] != shape[0]:
        raise NIRError(f"node {name!r} (Conv2d): kernel {kernel.shape} does not take the "
                       f"{shape[0]} channels before it")
    conv = ConvShape(tuple(shape), _pair(node.stride, "stride", name),
                     _pair(node.padding, "padding", name))
    (sy, sx), (py, px) = conv.stride, conv.padding
    out = (kernel.shape[0], (shape[1] + 2 * py - kernel.shape[2]) // sy + 1,
           (shape[2] + 2 * px - kernel.shape[3]) // sx + 1)
    bias = np.broadcast_to(np.asarray(node.bias, np.float64).reshape(-1, 1),
                           (out[0], out[1] * out[2])).ravel()
    return kernel, conv, bias, out


def from_nir(graph, dt_s: float = DT_S, time_scale: float = 1.0, reset: str | None = None,
             classes: list[str] | None = None, mapping: dict | None = None) -> SnnModel:
    """A model of the exact core from a ``nir.NIRGraph`` (see the module docstring).

    ``dt_s``: the clock step (s) the exporter assumed (snnTorch 1e-4); ``time_scale``: real
    duration of a step over ``dt_s`` (a snnTorch network run at 1 ms steps: 10); ``reset``:
    "zero" or "subtract" for every layer, else each node's metadata, else "zero"; ``classes``:
    output names (default the graph's metadata, else "0", "1", ...); ``mapping``: input kind,
    width, height, cell, channels (default the graph's metadata, else a (C, H, W) input's shape,
    else N-MNIST's raw layout). ``Conv2d`` nodes (stride, zero padding; no dilation or groups)
    become conv layers, their neurons and the rows of a ``Linear`` after a ``Flatten`` reordered
    from torch's channel-first order to the core's channel-last one. NIRError names the node that
    cannot be mapped and why."""
    if not (dt_s > 0 and time_scale > 0):  # nan fails too
        raise NIRError(f"the clock step and the time scale must be > 0, got dt_s {dt_s} and "
                       f"time_scale {time_scale}")
    meta = graph.metadata.get("evpipe") if isinstance(graph.metadata, dict) else None
    stored = json.loads(_text(meta)) if meta is not None else {}
    order = _chain(graph)
    input_shape = [int(v) for v in np.asarray(graph.nodes[order[0]].input_type["input"]).ravel()]
    shape = tuple(input_shape) if len(input_shape) == 3 else None  # (C, H, W) of what flows
    weights, convs, layers = [], [], []
    pending = bias = conv = flattened = None
    for name in order[1:-1]:
        node = graph.nodes[name]
        kind = type(node).__name__
        if kind == "Flatten" and pending is None and shape is not None:
            flattened, shape = shape, None
        elif kind in ("Linear", "Affine") and pending is None:
            if shape is not None and weights:
                raise NIRError(f"node {name!r} ({kind}) follows a conv layer without a Flatten")
            pending, conv = np.asarray(node.weight, np.float32).T, None
            bias = (np.asarray(node.bias, np.float64) if kind == "Affine"
                    else np.zeros(pending.shape[1]))
            if flattened is not None or (shape is not None and not weights):
                pending = _channels_last(pending, flattened or shape)
            flattened, shape = None, None
        elif kind == "Conv2d" and pending is None:
            pending, conv, bias, out = _conv(node, name, shape)
            shape = out
        elif kind in NEURONS and pending is not None:
            n = pending.shape[1] if conv is None else int(np.prod(shape))
            if np.asarray(node.v_threshold).size != n:
                raise NIRError(f"node {name!r} ({kind}) has {np.asarray(node.v_threshold).size} "
                               f"neurons after a layer of {n} outputs")
            theta, per_us, tau_us, layer_reset = _neuron(node, name, bias, dt_s, time_scale, reset)
            if conv is not None:
                theta, per_us = _channels_last(theta, shape), _channels_last(per_us, shape)
            weights.append(pending)
            convs.append(conv)
            layers.append((theta, per_us, tau_us, layer_reset))
            pending = None
        elif kind in WHY_NOT:
            raise NIRError(f"node {name!r} ({kind}) is not supported: {WHY_NOT[kind]}")
        else:
            expected = "a neuron node (LIF, IF, CubaLIF)" if pending is not None else \
                "a Linear, Affine or Conv2d node"
            raise NIRError(f"node {name!r} ({kind}) is not supported here: expected {expected}")
    if not weights or pending is not None:
        raise NIRError("the graph must alternate Linear/Affine/Conv2d and neuron nodes, ending "
                       "with a neuron node before the Output")
    if mapping is None:
        mapping = {k: stored[k] for k in MAPPING_KEYS if k in stored}
    if not mapping and len(input_shape) == 3:
        c, h, w = input_shape
        mapping = {"input": "events", "width": w, "height": h, "cell": 1, "channels": c}
    mapping = mapping or dict(RAW_NMNIST)
    if mapping.get("input", "events") not in INPUT_KINDS:
        raise NIRError(f"input kind {mapping['input']!r}; expected one of {INPUT_KINDS}")
    classes = classes or stored.get("classes") or [str(k) for k in range(len(layers[-1][0]))]
    try:
        return SnnModel(weights=tuple(weights), thresholds=tuple(x[0] for x in layers),
                        biases=tuple(x[1] for x in layers), taus_us=tuple(x[2] for x in layers),
                        resets=tuple(x[3] for x in layers), refractory_us=(0,) * len(weights),
                        classes=tuple(str(c) for c in classes),
                        convs=tuple(convs) if any(c is not None for c in convs) else (),
                        **mapping)
    except ValueError as error:
        raise NIRError(str(error)) from None
