"""Stage "encode": the events of each segment as one frame, turned into spikes by an input code.

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
"""

from __future__ import annotations

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
    STAGE,
    ParamError,
    Params,
    node_type,
    param,
    path_field,
)
from pipeline.core.packet import Packet, Packetizer, Segment, events_packet
from pipeline.core.stage import Stage, warm_up_packets


@dataclass(frozen=True)
class EncodeParams(Params):
    """The encode stage counts each segment's events per input neuron of the ``model`` file's
    input mapping and, at the segment's end, sends that frame as spikes in the input ``code``
    (rates, times to first spike or rank order), for an snn stage with the same model."""

    accepts = (EVENTS, FEATURES)
    emits = (EVENTS, FEATURES)

    model: str = path_field(help=".npz model file whose input mapping (width, height, cell, "
                                 "channels, input kind) the frames use", required=True)
    code: Literal["rate", "ttfs_linear", "ttfs_log", "rank_order"] = param("rate", "rate (Poisson), ttfs_linear, ttfs_log (time to first "
                                         "spike) or rank_order")
    window_us: int = param(50_000, "rate: length of the trains; ttfs: latest spike time",
                           unit="us", gt=0)
    max_rate_hz: float = param(1000.0, "rate: the rate of the largest count", unit="Hz", gt=0)
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

    def accepted(self):
        return (load_model(self.model).input,)

    def emitted(self):
        return self.accepted()


def encode_frame(params: EncodeParams, values: np.ndarray, segment: int) -> tuple:
    """The spikes (t us from the code's start, input index), by time, of ``values`` (the frame
    scaled to (0, 1]) in the ``params``' code; segment number ``segment`` seeds the rate code."""
    if params.code == "rate":
        return encoders.poisson(values * params.max_rate_hz, params.window_us,
                                params.seed + segment)
    if params.code == "ttfs_linear":
        return encoders.ttfs_linear(values, 1.0, params.window_us)
    if params.code == "ttfs_log":
        return encoders.ttfs_log(values, 1.0, params.tau_us, params.window_us)
    return encoders.rank_order(values, params.step_us)


@node_type("encode", STAGE, EncodeParams, weight=5.0)
class EncodeStage(Stage):
    """Per-segment event frames turned into rate, time-to-first-spike or rank-order spikes."""

    def __init__(self, name: str, params: EncodeParams):
        super().__init__(name)
        self.params = params
        m = load_model(params.model)
        self.layout = (m.width, m.height, m.cell, m.channels)
        self.dtype = m.input
        self.channel = "p" if m.input == EVENTS else "f"
        self.cells_x = -(-m.width // m.cell)
        self.counts = np.zeros(int(m.net.sizes[0]), np.int64)
        self.segment: Segment | None = None
        self.t_end = 0  # the open segment's last time (us)
        self.seq = 0

    def warm_up(self) -> None:
        """Run ``warm_up_packets`` through the stage (numba loads the encoders), then forget."""
        for packet in warm_up_packets(self.dtype, self.layout[0], self.layout[1],
                                      Segment(0, start=True, end=True)):
            self.process(packet)
        self.counts[:] = 0
        self.segment, self.seq = None, 0

    def process(self, packet: Packet) -> list[Packet]:
        header, records = packet.header, packet.records
        if header.dtype != self.dtype:
            raise ValueError(f"{self.name}: expected {self.dtype!r} records (the input of "
                             f"{self.params.model}), got {header.dtype!r}")
        if (header.width, header.height) != self.layout[:2]:
            raise ValueError(f"{self.name}: expected {self.layout[0]} x {self.layout[1]} px "
                             f"packets (the input size of {self.params.model}), got "
                             f"{header.width} x {header.height} px from {header.stream!r}")
        segment = header.segment
        if segment is None:
            raise ValueError(f"{self.name}: packets from {header.stream!r} carry no segment "
                             f"markers; the encode stage makes one frame per segment (replay)")
        if segment.start or self.segment is None or segment.id != self.segment.id:
            self.counts[:] = 0
            self.segment, self.t_end = segment, header.t_first
        self.t_end = max(self.t_end, header.t_last)  # an empty packet says 0
        idx = np.empty(len(records), np.int64)
        map_inputs(records["x"], records["y"], records[self.channel], *self.layout, idx)
        self.counts += np.bincount(idx[idx >= 0], minlength=len(self.counts))
        if not segment.end:
            return []
        return self._encode()

    def _encode(self) -> list[Packet]:
        """The spike packets of the finished segment's frame, from its last time (us)."""
        top = self.counts.max()
        values = self.counts / top if top else np.zeros(len(self.counts))
        t, idx = encode_frame(self.params, values, self.segment.id)
        width, height, cell, channels = self.layout
        spikes = np.zeros(len(t), EVENT_DTYPE if self.dtype == EVENTS else FEATURE_DTYPE)
        t0 = self.t_end
        spikes["t"] = t0 + t
        where = idx // channels
        spikes["x"], spikes["y"] = where % self.cells_x * cell, where // self.cells_x * cell
        spikes[self.channel] = idx % channels
        packetizer = Packetizer(max_us=self.params.packet_us, max_count=0, dtype=spikes.dtype)
        pieces = [piece for piece in packetizer.push(spikes) + packetizer.flush() if len(piece)]
        pieces = pieces or [spikes]
        s = self.segment
        out = []
        for k, piece in enumerate(pieces):
            marker = Segment(s.id, start=k == 0, end=k == len(pieces) - 1, label=s.label,
                             name=s.name)
            packet = events_packet(self.name, self.seq, piece, width, height, marker,
                                   dtype=self.dtype)
            if k == 0:  # the network is reset at the code's start, not at the first spike
                packet.header = packet.header.with_(t_first=t0)
            out.append(packet)
            self.seq += 1
        self.segment = None
        return out
