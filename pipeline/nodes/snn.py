"""Stages "snn" (exact event-driven LIF network) and "decoder" (early decisions from its outputs).

The snn stage maps events (dtype "events", channel = polarity) or feature events ("features",
channel = feature index) to input neurons as its model file says (``pipeline.core.model``), runs them
through ``kernels.lif`` and emits one "spikes" packet per input packet: the output spikes (all
layers with ``layers = "all"``) followed by one potential sample per output neuron at the
packet's last time, so a decoder can read margins. With ``segments = "markers"`` each segment
marker of a replay resets the network to v = 0 and is copied to the output. With ``segments =
"activity"`` (streams without markers: cameras) nothing is reset: the network runs leaky, so what
it integrated fades, and its output carries no segment.

The decoder emits decision records (JSON, docs/decisions.md). On segments: one early decision
per segment when its rule fires, and a forced one at segment end (or end of stream) when none
fired (``final = "always"``: a final one in any case); a segment that gave the network no evidence
at all ends in an abstention. Without segments: the live read-out of docs/snn.md
(``kernels.readout.track_objects``) finds the objects in the output spikes, decides each once,
and reports an object that never gathered a clear lead as an abstention.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kernels import lif, readout
from pipeline.core.events import register_dtype
from pipeline.core.model import live_readout, load_model
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
from pipeline.core.packet import DATA, Header, Packet, Segment, json_packet
from pipeline.core.stage import Stage, warm_up_packets

# t: us (sensor clock); seen: input events of the segment received when it happened; v: membrane
# potential (spikes: at the crossing, before reset); kind: SPIKE or SAMPLE (potential sample).
SPIKES = "spikes"  # record kind (dtype name) of the snn stage
SPIKE_DTYPE = register_dtype(SPIKES, np.dtype([
    ("t", "<i8"), ("seen", "<i8"), ("neuron", "<i4"), ("v", "<f4"), ("layer", "<i2"),
    ("kind", "i1")]))
SPIKE, SAMPLE = lif.SPIKE, lif.SAMPLE
END_OF_TIME_US = 2**62  # a stream time after every event: whatever is still open has gone

log = logging.getLogger(__name__)


def _check_model(path: str) -> None:
    """ParamError on ``model`` unless ``path`` names a readable model file."""
    try:
        load_model(path)
    except ValueError as exc:
        raise ParamError("model", str(exc)) from None


@dataclass(frozen=True)
class SnnParams(Params):
    """The snn stage runs its input through the network of the ``model`` file and emits the
    spikes of the output layer (or of ``layers = "all"``) plus potential samples. On replays
    (``segments = "markers"``) it resets the network at each segment start; on streams without
    markers (``"activity"``) it never resets and makes every layer leaky with ``leak_tau_us``
    instead. It takes events or feature events, as the model file's input says."""

    accepts = (EVENTS, FEATURES)
    emits = (SPIKES,)

    model: str = path_field(help=".npz model file (docs/snn.md): network, input mapping, classes",
                            required=True)
    layers: Literal["output", "all"] = param("output", "whose spikes are emitted")
    segments: Literal["markers", "activity"] = param(
        "markers", "markers: objects come from replay segment markers, the network is reset at "
                   "each; activity: no markers (cameras), the network runs leaky and the decoder "
                   "finds the objects")
    leak_tau_us: float = param(0.0, "segments = activity: membrane time constant of every layer; "
                                    "0 = the model file's calibrated value", unit="us", ge=0)

    def check_files(self):
        _check_model(self.model)

    def accepted(self):
        return (load_model(self.model).input,)  # events or features, as the model file says


@node_type("snn", STAGE, SnnParams, weight=11.0)
class SnnStage(Stage):
    """Exact event-driven spiking network: events or feature events in, spikes out."""

    def __init__(self, name: str, params: SnnParams):
        super().__init__(name)
        self.params = params
        self.model = m = load_model(params.model)
        self.live = params.segments == "activity"
        if self.live:
            leak = params.leak_tau_us or live_readout(params.model)["leak_tau_us"]
            self.net = self.model.leaky_network(leak)
        else:
            self.net = self.model.net
        self.state = lif.init_state(self.net)
        self.output_layer = self.model.n_layers - 1
        self.keep_layer = -1 if params.layers == "all" else self.output_layer
        self.layout = (m.width, m.height, m.cell, m.channels)
        self.dtype = EVENTS if m.input == EVENTS else FEATURES
        # input events since the last reset (activity: since the stream began) and the time
        # (us) the network has been run to
        self.cursor = lif.packet_cursor()
        self.warned_unmarked = False

    def warm_up(self) -> None:
        """Run ``warm_up_packets`` through the network, then start again from rest."""
        for packet in warm_up_packets(self.dtype, self.model.width, self.model.height,
                                      Segment(0, start=True)):
            self.process(packet)
        self.state = lif.init_state(self.net)
        self.cursor = lif.packet_cursor()

    def process(self, packet: Packet) -> list[Packet]:
        header = packet.header
        if header.dtype != self.dtype:
            raise ValueError(f"{self.name}: expected {self.dtype!r} records, got {header.dtype!r}")
        m = self.model
        if header.width != m.width or header.height != m.height:
            raise ValueError(f"{self.name}: expected {m.width} x {m.height} px packets (the input "
                             f"size of {self.params.model}), got {header.width} x {header.height} "
                             f"px from {header.stream!r}; map the sensor onto it with a scale "
                             f"stage (docs/live.md)")
        if self.live:
            return [self._run(header, packet.records, None)]
        segment = header.segment
        if segment is None:
            if not self.warned_unmarked:
                self.warned_unmarked = True
                log.warning("%s: packets from %r carry no segment markers, so the network is "
                            "never reset; for a camera or any stream without markers set "
                            "segments = \"activity\"", self.name, header.stream)
        elif segment.start:
            lif.reset_state(self.net, self.state, header.t_first)
            # each recording has its own time base
            self.cursor[lif.SEEN], self.cursor[lif.T_NOW] = 0, header.t_first
        return [self._run(header, packet.records, segment)]

    def _run(self, header: Header, records: np.ndarray, segment: Segment | None) -> Packet:
        """The packet's spikes and potential samples (``lif.run_packet``) in a new array, sized
        for up to two spikes per input event; the kernel replaces it by a larger one when a
        packet has more (numpy copies a slice of structured records several times slower than
        it allocates one)."""
        cursor, n_samples = self.cursor, self.net.sizes[-1]
        out = np.empty(n_samples + 16 + 2 * len(records), SPIKE_DTYPE)
        n, out = lif.run_packet(*self.net, *self.state, records, *self.layout, self.keep_layer,
                                header.t_last, cursor, out)
        t_end, t_first = int(cursor[lif.T_NOW]), int(cursor[lif.T_FIRST])
        return Packet(Header(header.stream, header.seq, SPIKES, header.width, header.height,
                             t_first, t_end, n, header.clock, header.sent_ns, DATA, segment),
                      out[:n])


@dataclass(frozen=True)
class DecoderParams(Params):
    """On segments (replays), the decoder counts the output spikes and reads the potentials of
    each segment, emits one early decision record when its ``rule`` fires and a forced one at the
    segment end when none did (or, with ``final = "always"``, a final one in any case). On spikes
    without segments (the snn stage's ``segments = "activity"``), it runs the live read-out of
    docs/snn.md: one decision per object found in the spikes, abstentions for unclear ones; the
    ``live`` parameters default to the model file's calibration."""

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
    live_k: float = param(0.0, "live: lead of the leaky class evidence that decides an object; "
                               "0 = calibrated (model file)", unit="spikes", ge=0)
    live_k_change: float = param(0.0, "live: lead over the decided class by which another class "
                                      "makes a new object; 0 = calibrated", unit="spikes", ge=0)
    live_evidence_tau_us: float = param(0.0, "live: time constant of the class evidence; "
                                             "0 = calibrated", unit="us", ge=0)
    live_quiet_us: float = param(0.0, "live: an object has gone after this long without output "
                                      "spikes; 0 = calibrated", unit="us", ge=0)

    def check_files(self):
        _check_model(self.model)

    def live(self) -> dict:
        """The live read-out parameters: these params where set, else the model file's."""
        values = live_readout(self.model)
        given = {"k": self.live_k, "k_change": self.live_k_change,
                 "evidence_tau_us": self.live_evidence_tau_us, "quiet_us": self.live_quiet_us}
        return {**values, **{key: value for key, value in given.items() if value > 0}}


@node_type("decoder", STAGE, DecoderParams, weight=2.0)
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
        self.stream = ""
        n = len(self.classes)
        # the open segment: all its output spikes, the spikes the rule counts, the potentials
        # of its last sample, the rule's spike history (grows with the longest segment) and
        # segment_packet's cursor
        self.counts, self.rule_counts = np.zeros(n, np.int64), np.zeros(n)
        self.potentials = np.zeros(n)
        self.history = self._history(256)
        self.cursor = np.zeros(readout.SEGMENT_CURSOR_SIZE, np.int64)
        # live read-out: its parameters, class evidence and tracker state, rows (grow with the
        # largest packet), objects reported
        self.live = params.live()
        self.evidence = np.zeros(n)
        self.track = readout.new_track_state()
        self.rows = readout.track_outputs(64)
        self.objects = 0

    @staticmethod
    def _history(room: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Empty spike history arrays for ``room`` spikes: times (us), neurons, seen."""
        return np.empty(room, np.int64), np.empty(room, np.int32), np.empty(room, np.int64)

    def warm_up(self) -> None:
        """Call the read-out kernels on a packet of the snn stage's records, as the decoder
        does, on scratch state, so numba loads them now."""
        for packet in warm_up_packets(SPIKES, 1, 1):
            n, records = len(self.classes), packet.records
            readout.track_records(records, self.output_layer, 0, np.zeros(n),
                                  readout.new_track_state(), 1.0, 1.0, 1.0, 1.0,
                                  readout.track_outputs(len(records)))
            readout.segment_packet(records, self.output_layer, True, 0, 1, np.zeros(n, np.int64),
                                   np.zeros(n), np.zeros(n), *self._history(len(records)),
                                   np.zeros(readout.SEGMENT_CURSOR_SIZE, np.int64))
        counts = np.zeros(len(self.classes))
        readout.forced_leader(np.zeros(len(self.classes), np.int64), counts)
        readout.leader(counts)

    def _open(self, header: Header, segment: Segment | None) -> None:
        self.open, self.decided, self.segment = True, False, segment
        self.t_start = header.t_first
        self.counts[:] = 0
        self.rule_counts[:] = 0
        self.potentials[:] = 0
        self.cursor[:] = 0
        self.last_t = header.t_last
        self.stream = header.stream

    def process(self, packet: Packet) -> list[Packet]:
        arrival = time.monotonic_ns()
        header, records = packet.header, packet.records
        if header.dtype != SPIKES:
            raise ValueError(f"{self.name}: expected 'spikes' records, got {header.dtype!r}")
        segment = header.segment
        self.stream = header.stream
        if segment is None and not self.open:
            return self._live(records, header.t_last, header.seq, arrival)
        if not self.open or (segment is not None and (
                segment.start or self.segment is None or segment.id != self.segment.id)):
            self._open(header, segment)
        counting = not self.decided and self.params.rule != "margin"
        if counting and self.cursor[readout.HISTORY] + len(records) > len(self.history[0]):
            room = 2 * (int(self.cursor[readout.HISTORY]) + len(records))
            self.history = tuple(np.concatenate([column, np.empty(room - len(column), column.dtype)])
                                 for column in self.history)
        i = readout.segment_packet(records, self.output_layer, counting, self.window, self.k,
                                   self.counts, self.rule_counts, self.potentials, *self.history,
                                   self.cursor)
        self.last_t = header.t_last
        decisions = []
        if not self.decided:
            decision = self._early(i, arrival)
            if decision is not None:
                decisions.append(decision)
        if segment is not None and segment.end:
            decisions += self._close(arrival)
        if not decisions:
            return []
        return [json_packet(header.stream, header.seq, decisions, t=decisions[-1]["t"],
                            segment=segment)]

    @property
    def seen(self) -> int:
        """Input events the network had received at the open segment's last potential sample."""
        return int(self.cursor[readout.SEEN])

    def _early(self, i: int, arrival: int) -> dict | None:
        """The early decision of the packet just read (``i``: the history index of the spike
        that made the rule's lead, or -1), if its rule fires."""
        if self.params.rule == "margin":
            if not self.cursor[readout.SAMPLED]:
                return None
            best, margin = readout.leader(self.potentials)
            if margin < self.params.margin:
                return None
            return self._record(best, self.potentials[best], margin, "margin",
                                int(self.cursor[readout.SAMPLE_T]), self.seen, arrival)
        if i < 0:
            return None
        best, lead = readout.leader(self.rule_counts)
        t, _, seen = self.history
        return self._record(best, self.rule_counts[best], lead, self.params.rule, int(t[i]),
                            int(seen[i]), arrival)

    def _close(self, arrival: int) -> list[dict]:
        out = []
        if not self.counts.any() and not self.potentials.any():
            out.append(self._abstention(self.segment, self.t_start, self.last_t, self.seen,
                                        "the network got no evidence in this segment", arrival))
        elif not self.decided or self.params.final == "always":
            best = readout.forced_leader(self.counts, self.potentials)
            counts = self.counts.astype(np.float64)
            lead = counts[best] - np.max(np.delete(counts, best), initial=-np.inf)
            out.append(self._record(best, counts[best], lead,
                                    "end" if self.decided else "forced", self.last_t, self.seen,
                                    arrival))
        self.open = False
        return out

    def _live(self, records: np.ndarray, t_now: int, seq: int, arrival: int) -> list[Packet]:
        """The live read-out over the output spikes of one packet (sequence number ``seq``);
        ``t_now`` (us) is the stream's time, when an object that fell silent may be released."""
        if 2 * len(records) + 1 > len(self.rows[0]):
            self.rows = readout.track_outputs(len(records))
        p = self.live
        n = readout.track_records(records, self.output_layer, t_now, self.evidence, self.track,
                                  p["evidence_tau_us"], p["k"], p["k_change"], p["quiet_us"],
                                  self.rows)
        if not n:
            return []
        kinds, _, at, classes, scores, margins, onsets, events, counts = (
            column[:n].tolist() for column in self.rows)
        decisions = []
        for kind, t, best, score, margin, onset, seen, count in zip(
                kinds, at, classes, scores, margins, onsets, events, counts):
            if kind == readout.RELEASE and (best != readout.ABSTAIN or count < p["k"]):
                continue  # a decided object has gone, or a blip too small to be an object
            self.segment = Segment(self.objects, start=True, end=kind == readout.RELEASE,
                                   name=f"object-{self.objects}")
            self.objects += 1
            self.t_start = onset
            if kind == readout.RELEASE:
                decisions.append(self._abstention(
                    self.segment, onset, t, seen, f"{count} output spikes, but no class led by "
                    f"more than {margin:.0f} (a decision needs {p['k']:.0f})", arrival))
            else:
                decisions.append(self._record(best, score, margin,
                                              "count" if kind == readout.DECIDE else "change",
                                              t, seen, arrival))
        if not decisions:
            return []
        return [json_packet(self.stream, seq, decisions, t=decisions[-1]["t"])]

    def _base(self, segment: Segment | None, t: int, seen: int, arrival: int) -> dict:
        """The fields every decision record has (docs/decisions.md)."""
        decoder_ns = time.monotonic_ns() - arrival
        return {
            "stream": self.stream,
            "segment": None if segment is None else segment.id,
            "segment_name": None if segment is None else segment.name,
            "t": int(t),
            "t_start": int(self.t_start),
            "events": int(seen),
            "decoder_ns": decoder_ns,
            "latency_ns": decoder_ns,  # deprecated name of decoder_ns (docs/decisions.md)
            "label": None if segment is None else segment.label,
        }

    def _record(self, best: int, score: float, margin: float, rule: str, t: int, seen: int,
                arrival: int) -> dict:
        self.decided = True
        return {**self._base(self.segment, t, seen, arrival), "class": int(best),
                "class_name": self.classes[best], "score": float(score), "margin": float(margin),
                "rule": rule}

    def _abstention(self, segment: Segment | None, t_start: int, t: int, seen: int, reason: str,
                    arrival: int) -> dict:
        """A record that names no class: the evidence did not justify one (``reason``)."""
        self.t_start = t_start
        return {**self._base(segment, t, seen, arrival), "class": None, "class_name": None,
                "score": 0.0, "margin": 0.0, "rule": "abstain", "reason": reason}

    def finish(self) -> list[Packet]:
        arrival = time.monotonic_ns()
        if not self.open:  # live: an object still open at the end of the stream has gone
            return self._live(np.empty(0, SPIKE_DTYPE), END_OF_TIME_US, 0, arrival)
        decisions = self._close(arrival)
        if not decisions:
            return []
        return [json_packet(self.stream, 0, decisions, t=decisions[-1]["t"],
                            segment=self.segment)]
