"""SNN model files: a documented ``.npz`` (numpy archive, no pickles) and its loader.

Keys (L layers, see docs/snn.md):

- ``format``: the string ``"evpipe-snn/1"``.
- ``classes``: str[n_out], the class names of the output neurons, in order.
- ``input``: ``"events"`` (channel = polarity) or ``"features"`` (channel = feature index);
  ``width``, ``height`` (sensor pixels), ``cell`` (pixels per input cell side), ``channels``:
  the input mapping of ``kernels.snn_input`` (raw pixels: cell 1, channels 2).
- ``w0`` .. ``w{L-1}``: float32 (n_in, n_out) weights; ``w0`` has
  ``ceil(width/cell) * ceil(height/cell) * channels`` rows.
- ``threshold{l}``, ``bias{l}``: float64 [n_out] (bias in potential per us, leaky layers only).
- ``tau_us``: float64 [L], membrane time constants in us, ``inf`` for non-leaky IF layers.
- ``reset``: str [L], ``"zero"`` or ``"subtract"``; ``refractory_us``: int64 [L].

Other keys are allowed and ignored here; trained models (``pipeline/learn/train.py``) add
``hots_prototypes`` and ``training`` (a JSON string), see docs/training.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from kernels import lif
from kernels.snn_input import n_inputs

FORMAT = "evpipe-snn/1"
INPUT_KINDS = ("events", "features")


@dataclass(frozen=True, eq=False)
class SnnModel:
    """A network with its input mapping and class names; ``net`` is the packed kernel form."""

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

    def __post_init__(self):
        if self.input not in INPUT_KINDS:
            raise ValueError(f"input must be one of {INPUT_KINDS}, got {self.input!r}")
        expected = n_inputs(self.width, self.height, self.cell, self.channels)
        if np.shape(self.weights[0])[0] != expected:
            raise ValueError(f"w0 has {np.shape(self.weights[0])[0]} rows, the input mapping "
                             f"needs {expected}")
        if np.shape(self.weights[-1])[1] != len(self.classes):
            raise ValueError(f"{len(self.classes)} class names for "
                             f"{np.shape(self.weights[-1])[1]} output neurons")
        object.__setattr__(self, "net", lif.make_network(
            list(self.weights), list(self.thresholds), list(self.taus_us), list(self.resets),
            list(self.refractory_us), list(self.biases)))

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def leaky_network(self, tau_us: float) -> lif.LIFNetwork:
        """The same network with every layer leaky with membrane time constant ``tau_us`` (us):
        what it integrated fades, so it can run on a stream without resets (docs/snn.md, "Live
        read-out")."""
        return lif.make_network(list(self.weights), list(self.thresholds),
                                [float(tau_us)] * self.n_layers, list(self.resets),
                                list(self.refractory_us), list(self.biases))

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
        for l in range(self.n_layers):
            n = np.shape(self.weights[l])[1]
            arrays[f"w{l}"] = np.asarray(self.weights[l], np.float32)
            arrays[f"threshold{l}"] = np.broadcast_to(np.asarray(self.thresholds[l], float), (n,))
            arrays[f"bias{l}"] = np.broadcast_to(np.asarray(self.biases[l], float), (n,))
        with open(path, "wb") as f:
            np.savez(f, **arrays)


def load_model(path) -> SnnModel:
    """Read a model file; errors name the file and the missing or malformed key."""
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npz model ({error})") from None
    with archive:
        def get(key):
            if key not in archive:
                raise ValueError(f"{path}: model file lacks key {key!r}")
            return archive[key]

        if str(get("format")) != FORMAT:
            raise ValueError(f"{path}: format {str(get('format'))!r}, expected {FORMAT!r}")
        taus = get("tau_us")
        layers = range(len(taus))
        try:
            return SnnModel(
                weights=tuple(get(f"w{l}") for l in layers),
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
    with np.load(os.fspath(path), allow_pickle=False) as archive:
        if "training" not in archive:
            raise ValueError(f"{path}: not a trained model (no 'training' metadata)")
        return json.loads(str(archive["training"]))


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

