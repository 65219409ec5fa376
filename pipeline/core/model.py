"""SNN model files: a documented ``.npz`` (numpy archive, no pickles) and its loader.

Keys (L layers, see docs/snn.md):

- ``format``: the string ``"evpipe-snn/1"``.
- ``classes``: str[n_out], the class names of the output neurons, in order.
- ``input``: ``"events"`` (channel = polarity) or ``"features"`` (channel = feature index);
  ``width``, ``height`` (sensor pixels), ``cell`` (pixels per input cell side), ``channels``:
  the input mapping of ``kernels.snn_input`` (raw pixels: cell 1, channels 2).
- ``kind{l}``: str, ``"dense"`` or ``"conv"``; absent means ``"dense"`` (files written before conv
  layers existed load unchanged).
- dense layer: ``w{l}``, float32 (n_in, n_out) weights; a first dense layer has
  ``ceil(width/cell) * ceil(height/cell) * channels`` rows.
- conv layer (``kernels.conv``): ``kernel{l}``, float32 (out_c, in_c, kh, kw), cross-correlation
  as torch's ``Conv2d``; ``in_shape{l}``, int64 [3], the input map (channels, height, width),
  for a first layer ``(channels, ceil(height/cell), ceil(width/cell))``; ``stride{l}`` and
  ``padding{l}``, int64 [2] (rows, columns; px, zero padding). Its n_out = out_c * H' * W'
  neurons are indexed channel-last, ``(y * W' + x) * out_c + c``, as the input mapping indexes
  its cells, so a dense layer after it has its rows in that order.
- ``threshold{l}``, ``bias{l}``: float64 [n_out] (bias in potential per us, leaky layers only).
- ``tau_us``: float64 [L], membrane time constants in us, ``inf`` for non-leaky IF layers.
- ``reset``: str [L], ``"zero"`` or ``"subtract"``; ``refractory_us``: int64 [L].

Other keys are allowed and ignored here; trained models (``pipeline/learn/train.py``) add
``hots_prototypes`` and ``training`` (a JSON string), see docs/training.md.
"""

from __future__ import annotations

import json
import os
import tokenize
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from kernels import lif
from kernels.conv import ConvShape
from kernels.snn_input import n_inputs

FORMAT = "evpipe-snn/1"
INPUT_KINDS = ("events", "features")
# what numpy raises for a file that is not a whole .npz archive (or .npy array): missing, empty
# (EOFError), truncated or with a bad CRC (zipfile.BadZipFile), damaged compressed data
# (zlib.error), a damaged array header (SyntaxError, tokenize.TokenError), not an archive at all
# (ValueError)
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, SyntaxError,
              tokenize.TokenError)


@dataclass(frozen=True, eq=False)
class SnnModel:
    """A network with its input mapping and class names; ``net`` is the packed kernel form.
    ``convs[l]`` is a ``kernels.conv.ConvShape`` for a conv layer (``weights[l]`` its kernel,
    out_c x in_c x kh x kw) and ``None`` for a dense one; empty: every layer dense."""

    weights: tuple
    thresholds: tuple
    biases: tuple
    taus_us: tuple
    resets: tuple
    refractory_us: tuple
    classes: tuple
    input: str = "events"
    width: int = 34
    height: int = 34
    cell: int = 1
    channels: int = 2
    convs: tuple = ()

    def __post_init__(self):
        if self.input not in INPUT_KINDS:
            raise ValueError(f"input must be one of {INPUT_KINDS}, got {self.input!r}")
        if self.convs and len(self.convs) != self.n_layers:
            raise ValueError(f"{len(self.convs)} layer kinds for {self.n_layers} layers")
        expected = n_inputs(self.width, self.height, self.cell, self.channels)
        first = self.layer_conv(0)
        if first is None and np.shape(self.weights[0])[0] != expected:
            raise ValueError(f"w0 has {np.shape(self.weights[0])[0]} rows, the input mapping "
                             f"needs {expected}")
        cells = (self.channels, -(-self.height // self.cell), -(-self.width // self.cell))
        if first is not None and tuple(np.ravel(first.in_shape).tolist()) != cells:
            raise ValueError(f"in_shape0 is {tuple(np.ravel(first.in_shape).tolist())}, the "
                             f"input mapping gives (channels, height, width) = {cells}")
        net = self.network(self.taus_us)
        if net.sizes[-1] != len(self.classes):
            raise ValueError(f"{len(self.classes)} class names for {net.sizes[-1]} output "
                             f"neurons")
        object.__setattr__(self, "net", net)

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def layer_conv(self, layer: int) -> ConvShape | None:
        """The conv shape of ``layer``, or None for a dense layer."""
        return self.convs[layer] if self.convs else None

    def network(self, taus_us, refractory_us=None) -> lif.LIFNetwork:
        """The packed network with these membrane time constants (us, one per layer) and
        refractory periods (us; None: the model's)."""
        refractory = self.refractory_us if refractory_us is None else refractory_us
        return lif.make_network(list(self.weights), list(self.thresholds), list(taus_us),
                                list(self.resets), list(refractory), list(self.biases),
                                [self.layer_conv(l) for l in range(self.n_layers)])

    def leaky_network(self, tau_us: float) -> lif.LIFNetwork:
        """The same network with every layer leaky with membrane time constant ``tau_us`` (us):
        what it integrated fades, so it can run on a stream without resets (docs/snn.md, "Live
        read-out"). A refractory period longer than ``tau_us`` is cut to it: on a stream it
        would silence a neuron through objects it has not seen (the binary method's hidden
        units, refractory for longer than a sample so that they fire once per sample)."""
        refractory = [int(min(r, tau_us)) for r in self.refractory_us]
        return self.network([float(tau_us)] * self.n_layers, refractory)

    def save(self, path, extra: dict | None = None) -> None:
        """Write the model; ``extra`` adds arrays under other keys (feature prototypes, training
        metadata), which ``load_model`` ignores."""
        arrays = {**(extra or {}), "format": np.array(FORMAT),
                  "classes": np.array(self.classes, dtype=str),
                  "input": np.array(self.input), "width": self.width, "height": self.height,
                  "cell": self.cell, "channels": self.channels,
                  "tau_us": np.asarray(self.taus_us, np.float64),
                  "reset": np.array(self.resets, dtype=str),
                  "refractory_us": np.asarray(self.refractory_us, np.int64)}
        sizes = self.net.sizes
        for l in range(self.n_layers):
            n = int(sizes[l + 1])
            shape = self.layer_conv(l)
            if shape is None:
                arrays[f"w{l}"] = np.asarray(self.weights[l], np.float32)
            else:
                arrays[f"kind{l}"] = np.array("conv")
                arrays[f"kernel{l}"] = np.asarray(self.weights[l], np.float32)
                arrays[f"in_shape{l}"] = np.asarray(shape.in_shape, np.int64)
                arrays[f"stride{l}"] = np.broadcast_to(np.asarray(shape.stride, np.int64), (2,))
                arrays[f"padding{l}"] = np.broadcast_to(np.asarray(shape.padding, np.int64), (2,))
            arrays[f"threshold{l}"] = np.broadcast_to(np.asarray(self.thresholds[l], float), (n,))
            arrays[f"bias{l}"] = np.broadcast_to(np.asarray(self.biases[l], float), (n,))
        with open(path, "wb") as f:
            np.savez(f, **arrays)


def load_model(path) -> SnnModel:
    """Read a model file; errors name the file and the missing or malformed key."""
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except NPZ_ERRORS as error:
        raise ValueError(f"{path}: not a readable .npz model ({error})") from None
    with archive:
        def get(key):
            if key not in archive:
                raise ValueError(f"{path}: model file lacks key {key!r}")
            try:
                return archive[key]
            except NPZ_ERRORS as error:
                raise ValueError(f"{path}: cannot read key {key!r} ({error})") from None

        if str(get("format")) != FORMAT:
            raise ValueError(f"{path}: format {str(get('format'))!r}, expected {FORMAT!r}")
        taus = get("tau_us")
        layers = range(len(taus))
        kinds = [str(archive[f"kind{l}"]) if f"kind{l}" in archive else "dense" for l in layers]
        for l, kind in enumerate(kinds):
            if kind not in lif.KINDS:
                raise ValueError(f"{path}: kind{l} is {kind!r}, expected one of "
                                 f"{sorted(lif.KINDS)}")
        convs = tuple(ConvShape(get(f"in_shape{l}"), get(f"stride{l}"), get(f"padding{l}"))
                      if kind == "conv" else None for l, kind in enumerate(kinds))
        try:
            return SnnModel(
                weights=tuple(get(f"kernel{l}" if kind == "conv" else f"w{l}")
                              for l, kind in enumerate(kinds)),
                convs=convs if "conv" in kinds else (),
                thresholds=tuple(get(f"threshold{l}") for l in layers),
                biases=tuple(get(f"bias{l}") for l in layers),
                taus_us=tuple(float(t) for t in taus),
                resets=tuple(str(r) for r in get("reset")),
                refractory_us=tuple(int(r) for r in get("refractory_us")),
                classes=tuple(str(c) for c in get("classes")),
                input=str(get("input")), width=int(get("width")), height=int(get("height")),
                cell=int(get("cell")), channels=int(get("channels")))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None


def read_training(path) -> dict:
    """The ``training`` metadata (JSON) of a model file written by ``pipeline/learn/train.py``."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as archive:
            training = str(archive["training"]) if "training" in archive else None
    except NPZ_ERRORS as error:
        raise ValueError(f"{path}: not a readable .npz model ({error})") from None
    if training is None:
        raise ValueError(f"{path}: not a trained model (no 'training' metadata)")
    return json.loads(training)


# The live read-out's parameters (docs/snn.md, "Live read-out"), used when a model file carries no
# calibration of its own (``training["live"]``, written by ``pipeline/learn/train.py``): membrane
# time constant of the leaky network (us), time constant of the class evidence (us), lead that
# decides an object and lead by which another class makes a new one (spikes), and the silence
# after which an object has gone (us).
LIVE_DEFAULTS = {"leak_tau_us": 50_000.0, "evidence_tau_us": 50_000.0, "k": 64.0,
                 "k_change": 128.0, "quiet_us": 90_000.0}


def live_readout(path) -> dict:
    """The live read-out parameters of a model file: its calibration, else ``LIVE_DEFAULTS``."""
    try:
        calibrated = read_training(path).get("live", {})
    except ValueError:
        calibrated = {}
    return {key: float(calibrated.get(key, default)) for key, default in LIVE_DEFAULTS.items()}

