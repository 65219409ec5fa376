"""Input codes: frames turned into spikes for the SNN core, by stage "encode" and source "images".

The review by Pfeiffer and Pfeil (2018, "Inference") lists the ways an analog input, such as an
image, is given to a spiking network: rates, times to first spike, the order of first spikes.
This stage builds that input from an event stream: it counts the events (or feature events) of a
segment per input neuron of a model file's input mapping (``kernels.snn_input``), the segment's
event frame, scales the counts by the frame's largest one (values in (0, 1]) and, at the
segment's end, encodes the frame with ``kernels.encoders``:

- ``rate``: a Poisson train per input, rate ``max_rate_hz`` times the value, over ``window_us``;
- ``ttfs_linear``: one spike per input with a count, at ``(1 - value) * window_us``;
- ``ttfs_log``: one spike at ``tau_us * ln(1 / value)``, none later than ``window_us``;
- ``rank_order``: one spike per input with a count, in decreasing order of counts, ``step_us``
  apart (ties: lower input index first).

The spikes leave as records of the input's kind (events: x, y of the input cell's first pixel, p
the channel; features: f the channel) at times ``t_end + code time`` (us), ``t_end`` the
segment's last event time, cut into packets of ``packet_us``; the first is marked segment start, the
last segment end, with the segment's id, label and name. A frame needs the whole segment, so the
code starts when the events have all arrived: its decisions come ``t_end - t_start`` later than
the time into the code. Segments come from replay markers; a stream without them has no frames.

The "images" source sends image files the same way: a dataset folder (one subfolder per class,
its name the label) or one file of ``.npy`` arrays or ``.png`` images, each an input map of the
model, shape (cells_y, cells_x, channels), or (cells_y, cells_x) when channels is 1; each image
is scaled by its largest value (negative values fire nothing) and encoded as one segment, the
next one starting ``gap_us`` after the last spike time the code allows (``window_us``; rank
order: one step per input).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kernels import encoders
from kernels.snn_input import map_inputs
from pipeline.core.events import EVENT_DTYPE, FEATURE_DTYPE
from pipeline.core.model import load_model
from pipeline.core.nodetype import (
    EVENTS,
    FEATURES,
    SOURCE,
    STAGE,
    ParamError,
    Params,
    node_type,
    param,
    path_field,
)
from pipeline.core.packet import Packet, Packetizer, Segment, events_packet
from pipeline.core.stage import Source, Stage, warm_up_packets


@dataclass(frozen=True)
class CodeParams(Params):
    """The model whose input the spikes feed and the input code with its settings."""

    model: str = path_field(help=".npz model file whose input mapping (width, height, cell, "
                                 "channels, input kind) the frames use", required=True)
    code: Literal["rate", "ttfs_linear", "ttfs_log", "rank_order"] = param(
        "rate", "rate (Poisson), ttfs_linear, ttfs_log (time to first spike) or rank_order")
    window_us: int = param(50_000, "rate: length of the trains; ttfs: latest spike time",
                           unit="us", gt=0)
    max_rate_hz: float = param(1000.0, "rate: the rate of the largest value", unit="Hz", gt=0)
    tau_us: float = param(10_000.0, "ttfs_log: time constant, t = tau ln(1 / value)", unit="us",
                          gt=0)
    step_us: int = param(10, "rank_order: time between consecutive spikes", unit="us", ge=1)
    seed: int = param(0, "rate: seed of the first segment's trains (segment k uses seed + k)",
                      ge=0)
    packet_us: int = param(1000, "output packet length", unit="us", gt=0)

    def check_files(self):
        try:
            load_model(self.model)
        except ValueError as exc:
            raise ParamError("model", str(exc)) from None

    def emitted(self):
        return (load_model(self.model).input,)


@dataclass(frozen=True)
class EncodeParams(CodeParams):
    """The encode stage counts each segment's events per input neuron of the ``model`` file's
    input mapping and, at the segment's end, sends that frame as spikes in the input ``code``
    (rates, times to first spike or rank order), for an snn stage with the same model."""

    accepts = (EVENTS, FEATURES)
    emits = (EVENTS, FEATURES)

    def accepted(self):
        return (load_model(self.model).input,)


class Frames:
    """Frames of one model's input map into spike packets (the code of ``params``)."""

    def __init__(self, name: str, params: CodeParams):
        self.name, self.params = name, params
        m = load_model(params.model)
        self.layout = (m.width, m.height, m.cell, m.channels)
        self.shape = (-(-m.height // m.cell), -(-m.width // m.cell), m.channels)  # y, x, c
        self.dtype = m.input
        self.channel = "p" if m.input == EVENTS else "f"
        self.seq = 0

    def spikes(self, values: np.ndarray, segment: int) -> tuple[np.ndarray, np.ndarray]:
        """(t us from the code's start, input index), by time, of ``values`` (one per input
        neuron, in [0, 1]); segment number ``segment`` seeds the rate code."""
        p = self.params
        if p.code == "rate":
            return encoders.poisson(values * p.max_rate_hz, p.window_us, p.seed + segment)
        if p.code == "ttfs_linear":
            return encoders.ttfs_linear(values, 1.0, p.window_us)
        if p.code == "ttfs_log":
            return encoders.ttfs_log(values, 1.0, p.tau_us, p.window_us)
        return encoders.rank_order(values, p.step_us)

    def packets(self, frame: np.ndarray, t0: int, s: Segment) -> list[Packet]:
        """The spike packets of ``frame`` (one non-negative value per input neuron) scaled by its
        largest value, from ``t0`` (us), marked as segment ``s``: the first packet starts at
        ``t0`` (the network is reset at the code's start, not at its first spike)."""
        top = frame.max(initial=0)
        t, idx = self.spikes(frame / top if top > 0 else np.zeros(len(frame)), s.id)
        width, height, cell, channels = self.layout
        spikes = np.zeros(len(t), EVENT_DTYPE if self.dtype == EVENTS else FEATURE_DTYPE)
        spikes["t"] = t0 + t
        where = idx // channels
        spikes["x"], spikes["y"] = where % self.shape[1] * cell, where // self.shape[1] * cell
        spikes[self.channel] = idx % channels
        packetizer = Packetizer(max_us=self.params.packet_us, max_count=0, dtype=spikes.dtype)
        pieces = packetizer.push(spikes) + packetizer.flush() or [spikes]
        out = []
        for k, piece in enumerate(pieces):
            marker = Segment(s.id, start=k == 0, end=k == len(pieces) - 1, label=s.label,
                             name=s.name)
            packet = events_packet(self.name, self.seq, piece, width, height, marker,
                                   dtype=self.dtype)
            if k == 0:
                packet.header = packet.header.with_(t_first=t0)
            out.append(packet)
            self.seq += 1
        return out


@node_type("encode", STAGE, EncodeParams, weight=5.0)
class EncodeStage(Stage):
    """Per-segment event frames turned into rate, time-to-first-spike or rank-order spikes."""

    def __init__(self, name: str, params: EncodeParams):
        super().__init__(name)
        self.params = params
        self.frames = Frames(name, params)
        self.counts = np.zeros(int(np.prod(self.frames.shape)), np.int64)
        self.segment: Segment | None = None
        self.t_end = 0  # the open segment's last time (us)

    def warm_up(self) -> None:
        """Run ``warm_up_packets`` through the stage (numba loads the encoders), then forget."""
        width, height = self.frames.layout[:2]
        for packet in warm_up_packets(self.frames.dtype, width, height,
                                      Segment(0, start=True, end=True)):
            self.process(packet)
        self.counts[:] = 0
        self.segment, self.frames.seq = None, 0

    def process(self, packet: Packet) -> list[Packet]:
        header, records, layout = packet.header, packet.records, self.frames.layout
        if header.dtype != self.frames.dtype:
            raise ValueError(f"{self.name}: expected {self.frames.dtype!r} records (the input of "
                             f"{self.params.model}), got {header.dtype!r}")
        if (header.width, header.height) != layout[:2]:
            raise ValueError(f"{self.name}: expected {layout[0]} x {layout[1]} px packets (the "
                             f"input size of {self.params.model}), got {header.width} x "
                             f"{header.height} px from {header.stream!r}")
        segment = header.segment
        if segment is None:
            raise ValueError(f"{self.name}: packets from {header.stream!r} carry no segment "
                             f"markers; the encode stage makes one frame per segment (replay)")
        if segment.start or self.segment is None or segment.id != self.segment.id:
            self.counts[:] = 0
            self.segment, self.t_end = segment, header.t_first
        self.t_end = max(self.t_end, header.t_last)  # an empty packet says 0
        idx = np.empty(len(records), np.int64)
        map_inputs(records["x"], records["y"], records[self.frames.channel], *layout, idx)
        self.counts += np.bincount(idx[idx >= 0], minlength=len(self.counts))
        if not segment.end:
            return []
        out = self.frames.packets(self.counts, self.t_end, self.segment)
        self.segment = None
        return out


IMAGE_SUFFIXES = (".npy", ".png")


@dataclass(frozen=True)
class ImagesParams(CodeParams):
    """The images source sends each image file of ``path`` (a folder with one subfolder per
    class, or one file; ``.npy`` arrays or ``.png`` images shaped as the ``model`` file's input
    map) as one segment of spikes in the input ``code``, ``gap_us`` apart."""

    emits = (EVENTS, FEATURES)

    path: str = path_field(help="an image file, or a folder of class subfolders of images "
                                "(.npy, .png)", required=True)
    gap_us: int = param(10_000, "silence between the codes of two images", unit="us", ge=0)

    def check_files(self):
        super().check_files()
        image_files(self.path)

    def output_size(self, size):
        model = load_model(self.model)
        return model.width, model.height


def image_files(path) -> list[tuple[str | None, pathlib.Path]]:
    """(label, file) of the images of ``path``: the file itself (no label), or the image files of
    each subfolder, labelled with its name (stripped), in name order; ParamError on ``path``
    when there are none."""
    path = pathlib.Path(path)
    if path.is_file():
        return [(None, path)]
    if not path.is_dir():
        raise ParamError("path", f"{path} does not exist")
    found = [(folder.name.strip(), f) for folder in sorted(p for p in path.iterdir() if p.is_dir())
             for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise ParamError("path", f"{path} has no class subfolders holding {'/'.join(IMAGE_SUFFIXES)}"
                                 f" images")
    return found


def read_image(path: pathlib.Path, shape: tuple[int, int, int]) -> np.ndarray:
    """The image at ``path`` as one float64 value per input neuron (channel-last order of the
    input map ``shape``, (cells_y, cells_x, channels)); ValueError naming the file otherwise."""
    try:
        if path.suffix.lower() == ".npy":
            image = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as picture:
                image = np.asarray(picture.convert("L"))
    except (OSError, ValueError, ImportError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from None
    if image.shape == shape[:2] and shape[2] == 1:
        image = image[:, :, None]
    if image.shape != shape or not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"{path}: a {image.dtype} image of shape {image.shape}; the model's input "
                         f"map needs numbers shaped {shape} (cells_y, cells_x, channels)")
    return np.maximum(image.astype(np.float64), 0.0).ravel()


@node_type("images", SOURCE, ImagesParams)
class ImagesSource(Source):
    """Image files sent as rate, time-to-first-spike or rank-order spikes, one segment each."""

    paced = False

    def __init__(self, name: str, params: ImagesParams):
        super().__init__(name)
        self.params = params
        self.frames = Frames(name, params)
        self.files = image_files(params.path)
        self.skip = 0

    def resume_at(self, n: int) -> bool:
        self.skip = n
        return True

    def packets(self) -> Iterator[Packet]:
        p, t0, sent = self.params, 0, 0
        for k, (label, path) in enumerate(self.files):
            if self.stopping:
                return
            frame = read_image(path, self.frames.shape)
            length = (p.step_us * int(np.count_nonzero(frame)) if p.code == "rank_order"
                      else p.window_us)
            segment = Segment(k, start=True, end=True, label=label, name=path.name)
            for packet in self.frames.packets(frame, t0, segment):
                if sent >= self.skip:
                    yield packet
                sent += 1
            t0 += length + p.gap_us
