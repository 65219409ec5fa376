"""Stages "snn" (exact event-driven LIF network) and "decoder" (early decisions from its outputs).

The snn stage maps events (dtype "events", channel = polarity) or feature events ("features",
channel = feature index) to input neurons as its model file says (``pipeline.core.model``), runs them
through ``kernels.lif`` and emits one "spikes" packet per input piece: the output spikes (all
layers with ``layers = "all"``) followed by one potential sample per output neuron at the
piece's last time, so a decoder can read margins. Segments reset the network to v = 0 at their
start: from replay markers (``segments = "markers"``) or from the event rate
(``segments = "activity"``, ``kernels.readout.activity_segments``; events outside an active
segment are not run).

The decoder emits decision records (JSON) as described in docs/decisions.md and
docs/snn.md; one early decision per segment when its rule fires, and a forced one at segment end
(or end of stream) when none fired (``final = "always"``: a final decision in any case).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kernels import lif, readout
from kernels.snn_input import map_inputs
from pipeline.core.events import register_dtype
from pipeline.core.model import load_model
from pipeline.core.nodetype import (
    EVENTS,
    FEATURES,
    JSON,
    STAGE,
    ParamError,
    Params,
    node_type,
    param,
    path_field,
)
from pipeline.core.packet import Header, Packet, Segment, json_packet
from pipeline.core.stage import Stage

# t: us (sensor clock); seen: input events of the segment received when it happened; v: membrane
# potential (spikes: at the crossing, before reset); kind: SPIKE or SAMPLE (potential sample).
SPIKES = "spikes"  # record kind (dtype name) of the snn stage
SPIKE_DTYPE = register_dtype(SPIKES, np.dtype([
    ("t", "<i8"), ("seen", "<i8"), ("neuron", "<i4"), ("v", "<f4"), ("layer", "<i2"),
    ("kind", "i1")]))
SPIKE, SAMPLE = 0, 1


def _check_model(path: str) -> None:
    """ParamError on ``model`` unless ``path`` names a readable model file."""
    try:
        load_model(path)
    except ValueError as exc:
        raise ParamError("model", str(exc)) from None


@dataclass(frozen=True)
class SnnParams(Params):
    """The snn stage runs its input through the network of the ``model`` file, resetting it at
    each segment start (segments from replay markers, or cut from the event rate), and emits the
    spikes of the output layer (or of ``layers = "all"``) plus potential samples. It takes
    events or feature events, as the model file's input says."""

    accepts = (EVENTS, FEATURES)
    emits = (SPIKES,)

    model: str = path_field(help=".npz model file (docs/snn.md): network, input mapping, classes",
                            required=True)
    layers: Literal["output", "all"] = param("output", "whose spikes are emitted")
    segments: Literal["markers", "activity"] = param(
        "markers", "where segments come from: replay markers, or the event rate (live streams)")
    activity_tau_us: float = param(20_000.0, "time constant of the event-rate trace (segments = "
                                             "activity)", unit="us", gt=0)
    onset_rate: float = param(20_000.0, "event rate that opens a segment (segments = activity)",
                              unit="events/s", gt=0)
    offset_rate: float = param(5_000.0, "event rate below which a segment closes; below "
                                        "onset_rate (segments = activity)", unit="events/s", gt=0)

    def check(self):
        if self.offset_rate >= self.onset_rate:
            raise ParamError("offset_rate", f"must be below onset_rate ({self.onset_rate:g} "
                                            f"events/s), got {self.offset_rate:g}")

    def check_files(self):
        _check_model(self.model)

    def accepted(self):
        return (load_model(self.model).input,)  # events or features, as the model file says


@node_type("snn", STAGE, SnnParams)
class SnnStage(Stage):
    """Exact event-driven spiking network: events or feature events in, spikes out."""

    def __init__(self, name: str, params: SnnParams):
        super().__init__(name)
        self.params = params
        self.model = load_model(params.model)
        self.net = self.model.net
        self.state = lif.init_state(self.net)
        self.output_layer = self.model.n_layers - 1
        self.dtype = EVENTS if self.model.input == EVENTS else FEATURES
        self.seen = 0
        # activity segmentation: rate trace state, current segment id, whether one is open
        self.activity = np.zeros(3)
        self.segment_id = -1
        self.active = False
        self.pending_start = False
        self.last_header: Header | None = None

    def _reset(self, t0: int) -> None:
        lif.reset_state(self.net, self.state, t0)
        self.seen = 0

    def process(self, packet: Packet) -> list[Packet]:
        header = packet.header
        if header.dtype != self.dtype:
            raise ValueError(f"{self.name}: expected {self.dtype!r} records, got {header.dtype!r}")
        records = packet.records
        t = np.ascontiguousarray(records["t"], dtype=np.int64)
        idx = np.empty(len(records), np.int64)
        m = self.model
        channel = records["p"] if self.dtype == EVENTS else records["f"]
        map_inputs(records["x"], records["y"], channel, m.width, m.height, m.cell, m.channels, idx)
        self.last_header = header
        if self.params.segments == "markers":
            segment = header.segment
            if segment is not None and segment.start:
                self._reset(header.t_first)
            return [self._run(header, t, idx, segment, None)]
        return self._process_activity(header, t, idx)

    def _process_activity(self, header: Header, t: np.ndarray, idx: np.ndarray) -> list[Packet]:
        p = self.params
        kinds = np.empty(2 * len(t), np.int8)
        times = np.empty(2 * len(t), np.int64)
        where = np.empty(2 * len(t), np.int64)
        n = readout.activity_segments(t, self.activity, p.activity_tau_us, p.onset_rate / 1e6,
                                       p.offset_rate / 1e6, kinds, times, where)
        out, pos = [], 0
        for kind, t_at, i in zip(kinds[:n].tolist(), times[:n].tolist(), where[:n].tolist()):
            if kind == readout.OFFSET:
                out.append(self._run(header, t[pos:i], idx[pos:i], self._segment(end=True), t_at))
                self.active = False
            else:
                self.segment_id += 1
                self.active, self.pending_start = True, True
                self._reset(t_at)
            pos = i
        if self.active and pos < len(t):
            out.append(self._run(header, t[pos:], idx[pos:], self._segment(end=False), None))
        return out

    def _segment(self, end: bool) -> Segment:
        segment = Segment(self.segment_id, start=self.pending_start, end=end,
                          name=f"activity-{self.segment_id}")
        self.pending_start = False
        return segment

    def _run(self, header: Header, t: np.ndarray, idx: np.ndarray, segment: Segment | None,
             t_end: int | None) -> Packet:
        spikes = lif.run(self.net, self.state, t, idx)
        keep = slice(None) if self.params.layers == "all" else spikes["layer"] == self.output_layer
        if t_end is None:
            t_end = int(t[-1]) if len(t) else header.t_last
        v = lif.potentials(self.net, self.state, self.output_layer, t_end)
        n_spikes = len(spikes["t"][keep])
        out = np.empty(n_spikes + len(v), SPIKE_DTYPE)
        for name in ("t", "neuron", "v", "layer"):
            out[name][:n_spikes] = spikes[name][keep]
        out["seen"][:n_spikes] = self.seen + spikes["src"][keep] + 1
        out["kind"][:n_spikes] = SPIKE
        self.seen += len(t)
        samples = out[n_spikes:]
        samples["t"], samples["seen"], samples["neuron"] = t_end, self.seen, np.arange(len(v))
        samples["v"], samples["layer"], samples["kind"] = v, self.output_layer, SAMPLE
        new = Header(stream=header.stream, seq=header.seq, dtype=SPIKES, width=header.width,
                     height=header.height, t_first=int(t[0]) if len(t) else t_end, t_last=t_end,
                     count=len(out), clock=header.clock, sent_ns=header.sent_ns,
                     segment=segment)
        return Packet(new, out)

    def finish(self) -> list[Packet]:
        if self.params.segments != "activity" or not self.active or self.last_header is None:
            return []
        self.active = False
        empty = np.empty(0, np.int64)
        last = int(self.activity[1])
        return [self._run(self.last_header, empty, empty, self._segment(end=True), last)]


@dataclass(frozen=True)
class DecoderParams(Params):
    """The decoder counts the output spikes and reads the potentials of each segment, emits one
    early decision record when its ``rule`` fires and a forced one at the segment end when none
    did (or, with ``final = "always"``, a final one in any case)."""

    accepts = (SPIKES,)
    emits = (JSON,)

    model: str = path_field(help="the snn stage's model file: class names and output layer",
                            required=True)
    rule: Literal["first", "count", "rate", "margin"] = param(
        "count", "first spike (first), a lead of k spikes (count), a lead of k spikes within "
                 "window_us (rate), or a potential lead of margin (margin)")
    k: int = param(3, "spike lead of rules count and rate", unit="spikes", ge=1)
    window_us: int = param(50_000, "sliding window of rule rate", unit="us", gt=0)
    margin: float = param(0.5, "potential lead of rule margin", unit="potential", ge=0)
    final: Literal["forced", "always"] = param(
        "forced", "at segment end, decide only when no rule fired (forced) or in any case (always)")

    def check_files(self):
        _check_model(self.model)


@node_type("decoder", STAGE, DecoderParams)
class DecoderStage(Stage):
    """Early decisions from output spikes and potentials (Pfeiffer and Pfeil 2018)."""

    def __init__(self, name: str, params: DecoderParams):
        super().__init__(name)
        self.params = params
        model = load_model(params.model)
        self.classes = model.classes
        self.output_layer = model.n_layers - 1
        self.k = 1 if params.rule == "first" else params.k
        self.window = params.window_us if params.rule == "rate" else 0
        self.open = False

    def _open(self, header: Header, segment: Segment | None) -> None:
        n = len(self.classes)
        self.open, self.decided, self.segment = True, False, segment
        self.t_start = header.t_first
        self.counts = np.zeros(n, np.int64)  # all output spikes of the segment
        self.rule_counts = np.zeros(n, np.float64)  # spikes counted by the rule (window)
        self.hist_t = np.empty(0, np.int64)
        self.hist_neuron = np.empty(0, np.int32)
        self.lo = 0
        self.potentials = np.zeros(n)
        self.seen = 0
        self.last_t = header.t_last
        self.stream = header.stream

    def process(self, packet: Packet) -> list[Packet]:
        arrival = time.monotonic_ns()
        header, records = packet.header, packet.records
        if header.dtype != SPIKES:
            raise ValueError(f"{self.name}: expected 'spikes' records, got {header.dtype!r}")
        segment = header.segment
        if not self.open or (segment is not None and (
                segment.start or self.segment is None or segment.id != self.segment.id)):
            self._open(header, segment)
        spikes = records[(records["kind"] == SPIKE) & (records["layer"] == self.output_layer)]
        samples = records[records["kind"] == SAMPLE]
        self.counts += np.bincount(spikes["neuron"], minlength=len(self.classes))
        if len(samples):
            self.potentials = samples["v"].astype(np.float64)
            self.seen = int(samples["seen"][-1])
        self.last_t = header.t_last
        decisions = []
        if not self.decided:
            decision = self._early(spikes, samples, arrival)
            if decision is not None:
                decisions.append(decision)
        if segment is not None and segment.end:
            decisions += self._close(arrival)
        if not decisions:
            return []
        return [json_packet(header.stream, header.seq, decisions, t=decisions[-1]["t"],
                            segment=segment)]

    def _early(self, spikes: np.ndarray, samples: np.ndarray, arrival: int) -> dict | None:
        if self.params.rule == "margin":
            if not len(samples):
                return None
            best, margin = readout.leader(self.potentials)
            if margin < self.params.margin:
                return None
            return self._record(best, self.potentials[best], margin, "margin",
                                int(samples["t"][-1]), self.seen, arrival)
        start = len(self.hist_t)
        self.hist_t = np.concatenate([self.hist_t, spikes["t"]])
        self.hist_neuron = np.concatenate([self.hist_neuron, spikes["neuron"]])
        i, self.lo = readout.count_lead(self.hist_t, self.hist_neuron, start, self.lo,
                                         self.window, self.k, self.rule_counts)
        if i < 0:
            return None
        best, lead = readout.leader(self.rule_counts)
        return self._record(best, self.rule_counts[best], lead, self.params.rule,
                            int(self.hist_t[i]), int(spikes["seen"][i - start]), arrival)

    def _close(self, arrival: int) -> list[dict]:
        out = []
        if not self.decided or self.params.final == "always":
            best = readout.forced_leader(self.counts, self.potentials)
            counts = self.counts.astype(np.float64)
            lead = counts[best] - np.max(np.delete(counts, best), initial=-np.inf)
            out.append(self._record(best, counts[best], lead,
                                    "end" if self.decided else "forced", self.last_t, self.seen,
                                    arrival))
        self.open = False
        return out

    def _record(self, best: int, score: float, margin: float, rule: str, t: int, seen: int,
                arrival: int) -> dict:
        self.decided = True
        segment = self.segment
        decoder_ns = time.monotonic_ns() - arrival
        return {
            "stream": self.stream,
            "segment": None if segment is None else segment.id,
            "segment_name": None if segment is None else segment.name,
            "class": int(best),
            "class_name": self.classes[best],
            "score": float(score),
            "margin": float(margin),
            "rule": rule,
            "t": int(t),
            "t_start": int(self.t_start),
            "events": int(seen),
            "decoder_ns": decoder_ns,
            "latency_ns": decoder_ns,  # deprecated name of decoder_ns (docs/decisions.md)
            "label": None if segment is None else segment.label,
        }

    def finish(self) -> list[Packet]:
        if not self.open:
            return []
        decisions = self._close(time.monotonic_ns())
        if not decisions:
            return []
        return [json_packet(self.stream, 0, decisions, t=decisions[-1]["t"],
                            segment=self.segment)]
