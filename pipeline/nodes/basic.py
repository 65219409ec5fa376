"""Basic node types: file replay, pass-through, and the console, JSON-lines and .npy sinks."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pipeline.core.events import JSON_DTYPE_NAME, concat_records
from pipeline.core.files import open_for_writing
from pipeline.core.nodetype import SINK, SOURCE, STAGE, node_type, path_field
from pipeline.core.packet import Packet
from pipeline.core.stage import Sink, Source, Stage
from sensors.replay import Replay


@dataclass(frozen=True)
class ReplayParams:
    path: str = path_field()  # a recording, or a dataset folder (class subfolders = labels)
    format: str = "auto"  # format name, or "auto" to detect from the content
    speed: float = 0.0  # 1.0 = real time, 10 = ten times faster; 0 = as fast as possible
    loop: bool = False
    start_us: int = 0  # replay from this offset after each recording's first event (us)
    stop_us: int = 0  # ... up to this offset (us); 0 = to the end
    packet_us: int = 1000  # cut packets every this much sensor time (us) ...
    packet_events: int = 10_000  # ... or at this many events, whichever comes first
    width: int = 0  # sensor size override (0 = from the file)
    height: int = 0

    def __post_init__(self):
        if not self.path:
            raise ValueError("missing required key: path")
        if self.speed < 0 or self.speed > 100:
            raise ValueError(f"speed must be 0 (as fast as possible) or within (0, 100], got {self.speed}")
        if self.packet_us <= 0 and self.packet_events <= 0:
            raise ValueError("packet_us or packet_events must be positive")


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
class NoParams:
    pass


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
        if packet.header.dtype == JSON_DTYPE_NAME:
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


@dataclass(frozen=True)
class ConsoleParams:
    stream: str = "stdout"  # "stdout" or "stderr"

    def __post_init__(self):
        if self.stream not in ("stdout", "stderr"):
            raise ValueError(f"stream must be 'stdout' or 'stderr', got {self.stream!r}")


def console_line(record: dict) -> str:
    """One readable line for a decision or a segment summary."""
    if "class_name" in record:  # a decision (see docs/decisions.md)
        truth = record.get("label")
        verdict = "" if truth is None else (
            f"  true {truth}: " + ("right" if str(truth) == str(record["class_name"]) else "WRONG"))
        return (f"[{record.get('stream')}] segment {record.get('segment')}: class {record['class_name']} "
                f"by {record.get('rule')} (margin {record.get('margin', 0):.3g}) after "
                f"{record.get('events')} events, {record.get('latency_ns', 0) / 1e3:.0f} us latency{verdict}")
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
class FileParams:
    path: str = path_field()

    def __post_init__(self):
        if not self.path:
            raise ValueError("missing required key: path")


@node_type("jsonl", SINK, FileParams)
class JsonLinesSink(RecordSink):
    """Writes one JSON object per line: decisions, or segment summaries for event streams."""

    def __init__(self, name: str, params: FileParams):
        super().__init__(name)
        self.handle = open_for_writing(params.path, "w")

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


@node_type("npy", SINK, FileParams)
class NpySink(Sink):
    """Records every received record into one .npy file (written at end of stream)."""

    def __init__(self, name: str, params: FileParams):
        super().__init__(name)
        self.path = params.path
        self.chunks: list[np.ndarray] = []

    def consume(self, packet: Packet) -> None:
        if packet.header.dtype == JSON_DTYPE_NAME:
            raise TypeError(f"{self.name}: the npy sink records event packets, got JSON records")
        if len(packet.records):
            self.chunks.append(np.array(packet.records))  # copy: the buffer belongs to ZeroMQ

    def finish(self) -> list[Packet]:
        with open_for_writing(self.path, "wb") as handle:
            np.save(handle, concat_records(self.chunks, self.chunks[0].dtype) if self.chunks else np.empty(0))
        return []
