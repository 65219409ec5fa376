"""Basic node types: file replay, pass-through, and the console, JSON-lines and .npy sinks."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np

from pipeline.core.events import concat_records
from pipeline.core.files import open_for_writing
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
from pipeline.core.packet import Packet
from pipeline.core.stage import Sink, Source, Stage
from sensors.readers import formats
from sensors.replay import Replay


@dataclass(frozen=True)
class PacketParams(Params):
    """A source cuts its events into packets of ``packet_us`` sensor time or ``packet_events``
    events, whichever comes first."""

    emits = (EVENTS,)

    packet_us: int = param(1000, "cut a packet every this much sensor time; 0 = by count only",
                           unit="us", ge=0)
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


@node_type("replay", SOURCE, ReplayParams)
class ReplaySource(Source):
    """Replays a recording or a labelled dataset folder, paced or as fast as possible."""

    def __init__(self, name: str, params: ReplayParams):
        super().__init__(name)
        self.replay = Replay(name, params.path, params.format, params.speed, params.loop,
                             params.start_us, params.stop_us, params.packet_us,
                             params.packet_events, params.width, params.height,
                             stopping=lambda: self.stopping)

    def packets(self) -> Iterator[Packet]:
        return self.replay.packets()


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
        return [packet]


@dataclass
class SegmentTally:
    """Events, packets and time span of the segment in progress, per input stream."""

    events: int = 0
    packets: int = 0
    t_first: int | None = None
    t_last: int = 0

    def add(self, packet: Packet) -> None:
        header = packet.header
        self.events += header.count
        self.packets += 1
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
            "packets": tally.packets, "t_first_us": tally.t_first, "duration_us": duration}


class RecordSink(Sink):
    """A sink that writes one record per decision (JSON payloads) or per segment (events)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.segments = SegmentSummaries()

    def consume(self, packet: Packet) -> None:
        if packet.header.dtype == JSON:
            for record in packet.records:
                self.write(record)
            return
        summary = self.segments.add(packet)
        if summary is not None:
            self.write(summary)

    def finish(self) -> list[Packet]:
        for summary in self.segments.leftovers():
            self.write(summary)
        return []

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


def console_line(record: dict) -> str:
    """One readable line for a decision or a segment summary."""
    if "class_name" in record:  # a decision (see docs/decisions.md)
        truth = record.get("label")
        verdict = "" if truth is None else (
            f"  true {truth}: " + ("right" if str(truth) == str(record["class_name"]) else "WRONG"))
        return (f"[{record.get('stream')}] segment {record.get('segment')}: class {record['class_name']} "
                f"by {record.get('rule')} (margin {record.get('margin', 0):.3g}) after "
                f"{record.get('events')} events, decoder {record.get('decoder_ns', 0) / 1e3:.0f} us{verdict}")
    label = "" if record.get("label") is None else f" label {record['label']}"
    name = "" if record.get("name") is None else f" ({record['name']})"
    return (f"[{record['stream']}] segment {record['segment']}{name}{label}: {record['events']:,} events "
            f"in {record['packets']} packets over {record['duration_us'] / 1e3:.1f} ms")


@node_type("console", SINK, ConsoleParams)
class ConsoleSink(RecordSink):
    """Prints one readable line per decision, or per segment for event streams."""

    def __init__(self, name: str, params: ConsoleParams):
        super().__init__(name)
        self.out = sys.stdout if params.stream == "stdout" else sys.stderr

    def write(self, record: dict) -> None:
        print(console_line(record), file=self.out, flush=True)


@dataclass(frozen=True)
class FileParams(Params):
    """A sink writing to the file ``path`` (its folder is created)."""

    path: str = path_field(help="output file", required=True)


@dataclass(frozen=True)
class JsonLinesParams(FileParams):
    """The jsonl sink writes each decision record, or one summary per event-stream segment, as
    one JSON object per line of ``path``."""

    accepts = RECORD_SINK_TAKES


@node_type("jsonl", SINK, JsonLinesParams)
class JsonLinesSink(RecordSink):
    """Writes one JSON object per line: decisions, or segment summaries for event streams."""

    def __init__(self, name: str, params: JsonLinesParams):
        super().__init__(name)
        self.handle = open_for_writing(params.path, "w")

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
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
        self.path = params.path
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
