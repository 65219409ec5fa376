"""Basic node types: file replay, pass-through, and the console, JSON-lines and .npy sinks.

The console and JSON-lines sinks add ``origin_ns`` and ``e2e_latency_ns`` to every record they
write (``pipeline.core.packet.origin_fields``): the origin of the packet the record came with (for
a decision, the packet of the deciding events, docs/decisions.md) and the host time from it to
the moment of writing, ns.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator, Literal

import numpy as np

from pipeline.core.events import concat_records
from pipeline.core.files import make_parent, open_for_writing
from pipeline.core.nodetype import (
    ANY,
    ARRAYS,
    EVENTS,
    FEATURES,
    JSON,
    SAME,
    SINK,
    SOURCE,
    STAGE,
    ParamError,
    Params,
    check_size,
    node_type,
    param,
    path_field,
)
from pipeline.core.packet import Packet, origin_fields
from pipeline.core.stage import Sink, Source, Stage
from sensors.readers import FormatError, formats
from sensors.replay import Replay


@dataclass(frozen=True)
class PacketParams(Params):
    """A source cuts its events into packets of ``packet_us`` sensor time or ``packet_events``
    events, whichever comes first."""

    emits = (EVENTS,)

    # at most 2**62 us: a packet's end (its first int64 time + packet_us) must not overflow
    packet_us: int = param(1000, "cut a packet every this much sensor time; 0 = by count only",
                           unit="us", ge=0, le=2**62)
    packet_events: int = param(10_000, "... or at this many events, whichever comes first; "
                                       "0 = by time only", unit="events", ge=0)

    def check(self):
        if self.packet_us == 0 and self.packet_events == 0:
            raise ParamError("packet_us", "packet_us or packet_events must be positive")


@dataclass(frozen=True)
class ReplayParams(PacketParams):
    """The replay source reads ``path`` in ``format``, cuts its events into packets of
    ``packet_us`` sensor time or ``packet_events`` events, and sends them paced at ``speed``."""

    path: str = path_field(help="a recording, or a dataset folder (class subfolders = labels)",
                           required=True)
    format: str = param("auto", "reader format name (see `evpipe info`), or auto to detect it "
                                "from the content")
    speed: float = param(0.0, "replay factor: 1 = real time, 10 = ten times faster, 0 = as fast "
                              "as possible", ge=0, le=100)
    loop: bool = param(False, "start again at the end")
    start_us: int = param(0, "replay from this offset after each recording's first event",
                          unit="us", ge=0)
    stop_us: int = param(0, "replay up to this offset after each recording's first event; "
                            "0 = to the end", unit="us", ge=0)
    width: int = param(0, "sensor width override; 0 = from the file", unit="px", ge=0)
    height: int = param(0, "sensor height override; 0 = from the file", unit="px", ge=0)

    def check(self):
        super().check()
        if self.format != "auto" and self.format not in formats():
            raise ParamError("format", f"expected 'auto' or one of {', '.join(sorted(formats()))}, "
                                       f"got {self.format!r}")
        if self.stop_us and self.stop_us <= self.start_us:
            raise ParamError("stop_us", f"must be 0 (to the end) or after start_us ({self.start_us}), "
                                        f"got {self.stop_us}")
        check_size(self, "the file")


@node_type("replay", SOURCE, ReplayParams, weight=15.0)
class ReplaySource(Source):
    """Replays a recording or a labelled dataset folder, paced or as fast as possible."""

    def __init__(self, name: str, params: ReplayParams):
        super().__init__(name)
        self.replay = Replay(name, params.path, params.format, params.speed, params.loop,
                             params.start_us, params.stop_us, params.packet_us,
                             params.packet_events, params.width, params.height,
                             stopping=lambda: self.stopping)
        self.paced = params.speed > 0
        self.path = params.path

    def packets(self) -> Iterator[Packet]:
        """The replay's packets; a FormatError (the node's failure, so the run exits 1) when no
        file could be read, each unreadable one logged by the replay."""
        yield from self.replay.packets()
        if self.replay.unreadable:
            raise FormatError(self.path, None, f"no recording could be read "
                                               f"({len(self.replay.skipped)} unreadable, each logged)")

    def resume_at(self, n: int) -> bool:
        self.replay.skip = n
        return True


@dataclass(frozen=True)
class NoParams(Params):
    """A node type without parameters."""

    accepts = (ANY,)
    emits = SAME


@node_type("passthrough", STAGE, NoParams)
class PassThrough(Stage):
    """Forwards every packet unchanged (placeholder for a processing stage)."""

    def __init__(self, name: str, params: NoParams):
        super().__init__(name)

    def process(self, packet: Packet) -> list[Packet]:
        return [Packet(packet.header, packet.records)]  # its own packet (pipeline.core.stage)


@dataclass
class SegmentTally:
    """Events, packets, time span and latest origin (host ns) of the segment in progress, per
    input stream."""

    events: int = 0
    packets: int = 0
    t_first: int | None = None
    t_last: int = 0
    origin_ns: int = 0

    def add(self, packet: Packet) -> None:
        header = packet.header
        self.events += header.count
        self.packets += 1
        self.origin_ns = header.origin_ns
        if header.count:
            self.t_first = header.t_first if self.t_first is None else self.t_first
            self.t_last = header.t_last


class SegmentSummaries:
    """Turns event packets into one summary record per segment (and one per stream end)."""

    def __init__(self):
        self.tallies: dict[str, SegmentTally] = {}

    def add(self, packet: Packet) -> dict | None:
        """The summary record when ``packet`` ends a segment, else None."""
        header = packet.header
        tally = self.tallies.setdefault(header.stream, SegmentTally())
        if header.segment is not None and header.segment.start:
            tally = self.tallies[header.stream] = SegmentTally()
        tally.add(packet)
        if header.segment is None or not header.segment.end:
            return None
        del self.tallies[header.stream]
        return summary_record(header.stream, tally, header.segment)

    def leftovers(self) -> list[dict]:
        """Summaries of streams whose data was never cut into segments."""
        return [summary_record(stream, tally, None) for stream, tally in self.tallies.items()]


def summary_record(stream: str, tally: SegmentTally, segment) -> dict:
    duration = (tally.t_last - tally.t_first) if tally.t_first is not None else 0
    return {"stream": stream, "segment": None if segment is None else segment.id,
            "name": None if segment is None else segment.name,
            "label": None if segment is None else segment.label, "events": tally.events,
            "packets": tally.packets, "t_first_us": tally.t_first, "duration_us": duration,
            "origin_ns": tally.origin_ns}


class RecordSink(Sink):
    """A sink that writes one record per decision (JSON payloads) or per segment (events)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.segments = SegmentSummaries()

    def consume(self, packet: Packet) -> None:
        header = packet.header
        if header.dtype == JSON:
            for record in packet.records:
                self.deliver(record, header.origin_ns)
            return
        summary = self.segments.add(packet)
        if summary is not None:
            self.deliver(summary, summary["origin_ns"])

    def finish(self) -> list[Packet]:
        for summary in self.segments.leftovers():
            self.deliver(summary, summary["origin_ns"])
        return []

    def deliver(self, record, origin_ns: int) -> None:
        """Write ``record`` with ``origin_ns`` and its end-to-end latency now (ns); a JSON value
        that is not an object has no room for them and is written as it is."""
        if isinstance(record, dict):
            record = {**record, **origin_fields(origin_ns, time.time_ns())}
        self.write(record)

    def write(self, record: dict) -> None:
        raise NotImplementedError


# What the console and jsonl sinks write: decision records as they are, and one summary per
# segment of an event stream (events counted from packet headers).
RECORD_SINK_TAKES = (JSON, EVENTS, FEATURES)


@dataclass(frozen=True)
class ConsoleParams(Params):
    """The console sink prints one line per decision or per event-stream segment to ``stream``."""

    accepts = RECORD_SINK_TAKES

    stream: Literal["stdout", "stderr"] = param("stdout", "where the lines go")


def ms(ns: int | None) -> str:
    """A host duration in ns as milliseconds with one decimal, "unknown" when None."""
    return "unknown" if ns is None else f"{ns / 1e6:.1f} ms"


def decision_line(record: dict) -> str:
    """One readable line for a decision or an abstention (docs/decisions.md), e.g. ``[snn]
    object 3: class 7 by count (score 412, margin 96) 31.2 ms after onset, 312 events; e2e
    4.1 ms, decoder 38 us  true 7: right``: the sensor time from the object's onset to the
    decision, the input events seen by then, the end-to-end latency at writing and the time
    spent in the decoder."""
    decided = record.get("class_name")
    if decided is None:
        what = f"no decision ({record.get('reason') or 'no reason given'})"
    else:
        what = (f"class {decided} by {record.get('rule')} (score {record.get('score', 0):.4g}, "
                f"margin {record.get('margin', 0):.4g})")
    truth = record.get("label")
    verdict = "" if truth is None else f"  true {truth}" + (
        "" if decided is None else ": right" if str(truth) == str(decided) else ": WRONG")
    onset_ms = (record.get("t", 0) - record.get("t_start", 0)) / 1e3
    return (f"[{record.get('stream')}] object {record.get('segment')}: {what} {onset_ms:.1f} ms "
            f"after onset, {record.get('events', 0):,} events; e2e {ms(record.get('e2e_latency_ns'))}, "
            f"decoder {(record.get('decoder_ns') or 0) / 1e3:.0f} us{verdict}")


def console_line(record: dict) -> str:
    """One readable line for a decision (``decision_line``) or a segment summary."""
    if "class_name" in record:  # a decision or an abstention (see docs/decisions.md)
        return decision_line(record)
    label = "" if record.get("label") is None else f" label {record['label']}"
    name = "" if record.get("name") is None else f" ({record['name']})"
    return (f"[{record['stream']}] segment {record['segment']}{name}{label}: {record['events']:,} events "
            f"in {record['packets']} packets over {record['duration_us'] / 1e3:.1f} ms")


@dataclass
class DecisionTally:
    """The decisions of one stream so far: counts, verdicts, end-to-end latencies (ns)."""

    decisions: int = 0
    abstentions: int = 0
    labelled: int = 0  # decisions whose record names the true class
    right: int = 0
    e2e_ns: list[int] = field(default_factory=list)

    def add(self, record: dict) -> None:
        if record.get("class_name") is None:
            self.abstentions += 1
        else:
            self.decisions += 1
            if record.get("label") is not None:
                self.labelled += 1
                self.right += str(record["label"]) == str(record["class_name"])
        if record.get("e2e_latency_ns") is not None:
            self.e2e_ns.append(record["e2e_latency_ns"])

    def line(self, stream: str) -> str:
        """E.g. ``[snn] end of stream: 20 decisions, 0 abstentions, 19/20 right; e2e p50 4.1 ms,
        p99 9.3 ms`` (right/total only when labels are known)."""
        verdicts = f", {self.right}/{self.labelled} right" if self.labelled else ""
        if self.e2e_ns:
            p50, p99 = np.percentile(self.e2e_ns, [50, 99])
            latency = f"e2e p50 {ms(p50)}, p99 {ms(p99)}"
        else:
            latency = "e2e unknown"
        return (f"[{stream}] end of stream: {self.decisions} decisions, {self.abstentions} "
                f"abstentions{verdicts}; {latency}")


@node_type("console", SINK, ConsoleParams, weight=0.5)
class ConsoleSink(RecordSink):
    """Prints one readable line per decision, or per segment for event streams, and a closing
    line per stream of decisions at the end."""

    def __init__(self, name: str, params: ConsoleParams):
        super().__init__(name)
        self.out = sys.stdout if params.stream == "stdout" else sys.stderr
        self.tallies: dict[str, DecisionTally] = {}

    def write(self, record: dict) -> None:
        print(console_line(record), file=self.out, flush=True)
        if "class_name" in record:
            self.tallies.setdefault(str(record.get("stream")), DecisionTally()).add(record)

    def finish(self) -> list[Packet]:
        super().finish()
        for stream, tally in self.tallies.items():
            print(tally.line(stream), file=self.out, flush=True)
        return []


@dataclass(frozen=True)
class FileParams(Params):
    """A sink writing to the file ``path`` (its folder is created)."""

    path: str = path_field(help="output file", required=True)


@dataclass(frozen=True)
class JsonLinesParams(FileParams):
    """The jsonl sink writes each decision record, or one summary per event-stream segment, as
    one JSON object per line of ``path``."""

    accepts = RECORD_SINK_TAKES


@node_type("jsonl", SINK, JsonLinesParams, weight=0.5)
class JsonLinesSink(RecordSink):
    """Writes one JSON object per line: decisions, or segment summaries for event streams."""

    def __init__(self, name: str, params: JsonLinesParams):
        super().__init__(name)
        # opened to add, emptied before the first record unless resumed (Sink.resume)
        self.handle = open_for_writing(params.path, "a")
        self.fresh = True

    def resume(self) -> None:
        self.fresh = False

    def _start(self) -> None:
        if self.fresh:
            self.handle.truncate(0)
            self.fresh = False

    def write(self, record: dict) -> None:
        self._start()
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self._start()
        self.handle.close()


@dataclass(frozen=True)
class NpyParams(FileParams):
    """The npy sink keeps every record it receives and writes them all, in one array, to the
    .npy file ``path`` at the end of the stream."""

    accepts = (ARRAYS,)


@node_type("npy", SINK, NpyParams)
class NpySink(Sink):
    """Records every received record into one .npy file (written at end of stream)."""

    def __init__(self, name: str, params: NpyParams):
        super().__init__(name)
        self.path = make_parent(params.path)  # a folder that cannot be made fails here, not at the end
        self.chunks: list[np.ndarray] = []

    def consume(self, packet: Packet) -> None:
        if packet.header.dtype == JSON:
            raise TypeError(f"{self.name}: the npy sink records event packets, got JSON records")
        if len(packet.records):
            self.chunks.append(np.array(packet.records))  # copy: the buffer belongs to ZeroMQ

    def finish(self) -> list[Packet]:
        with open_for_writing(self.path, "wb") as handle:
            np.save(handle, concat_records(self.chunks, self.chunks[0].dtype) if self.chunks else np.empty(0))
        return []
