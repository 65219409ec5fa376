"""Packets: a small header plus a contiguous record array, and the packetizer that cuts them.

A packet's header says which stream it belongs to, its sequence number (per stream, +1 per
packet, so a gap means packets were lost), the record dtype name, the sensor size, the first and
last event time (us, in the sensor clock domain), the host send time (ns), the host time at
which the source obtained the events (``origin_ns``) and optional segment markers. End of stream
is its own packet kind (``kind == "eos"``), never a timeout.

``origin_ns`` is what end-to-end latency is measured from: ``time.time_ns()`` (CLOCK_REALTIME, ns
since the Unix epoch, so processes and NTP-synced hosts compare) when a camera or network batch
was received, or when a replay or synthetic source released the packet; 0 means unknown. Stages
keep it: the runtime copies an input packet's origin to every packet its processing returns
(``pipeline.core.stage``), so a decision carries the origin of the events it was decided on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.core.events import EVENT_DTYPE, JSON_DTYPE_NAME, concat_records

DATA = "data"
EOS = "eos"
KINDS = (DATA, EOS)
BATCH = "batch"  # the kind of a message carrying several data packets (pipeline.core.wire)


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment marker: a recording (dataset sample) or an activity burst on a live stream.

    ``start`` is set on the first packet of the segment, ``end`` on its last (both on a packet
    that is the whole segment). ``label`` is the ground-truth class name when the replay knows it.
    """

    id: int
    start: bool = False
    end: bool = False
    label: str | None = None
    name: str | None = None


@dataclass(slots=True, unsafe_hash=True)
class Header:
    """Packet header. Times: ``t_first``/``t_last`` in us (sensor clock); ``sent_ns`` (when this
    copy was sent) and ``origin_ns`` (when the source obtained the events, 0 = unknown) in ns of
    the host clock ``time.time_ns()``.

    A header is never changed once made: ``stamped`` and ``with_`` build new ones. It is not a
    frozen dataclass only because every packet makes two or three headers on its way through a
    worker, and a frozen one costs about 2.7 us to build against 0.4 us (bench_graph's one-worker
    graph against the chain)."""

    stream: str
    seq: int
    dtype: str = "events"
    width: int = 0
    height: int = 0
    t_first: int = 0
    t_last: int = 0
    count: int = 0
    clock: str = "sensor"
    sent_ns: int = 0
    kind: str = DATA
    segment: Segment | None = None
    origin_ns: int = 0

    def with_(self, **changes) -> "Header":
        return replace(self, **changes)

    def stamped(self, stream: str, seq: int, origin_ns: int, sent_ns: int | None = None) -> Header:
        """This header with ``stream``, ``seq``, ``origin_ns`` and (unless None) ``sent_ns`` set:
        what every packet gets on its way out of a node, built by one positional call (``with_``
        costs several times more)."""
        return Header(stream, seq, self.dtype, self.width, self.height, self.t_first, self.t_last,
                      self.count, self.clock, self.sent_ns if sent_ns is None else sent_ns,
                      self.kind, self.segment, origin_ns)


@dataclass(slots=True)
class Packet:
    """A header and its records (a structured array, or a list of dicts for JSON payloads)."""

    header: Header
    records: np.ndarray | list = field(default_factory=lambda: np.empty(0, EVENT_DTYPE))

    @property
    def is_eos(self) -> bool:
        return self.header.kind == EOS

    def __len__(self) -> int:
        return len(self.records)


def events_packet(stream: str, seq: int, events: np.ndarray, width: int, height: int,
                  segment: Segment | None = None, dtype: str = "events",
                  origin_ns: int = 0) -> Packet:
    """A data packet over ``events``, with first/last time and count filled in; ``origin_ns``
    (host ns, ``time.time_ns()``) is when its source obtained them, 0 if unknown."""
    n = len(events)
    if n:
        t = events["t"]  # one field view for both ends
        t_first, t_last = int(t[0]), int(t[-1])
    else:
        t_first = t_last = 0
    header = Header(stream, seq, dtype, width, height, t_first, t_last, n, "sensor", 0, DATA,
                    segment, origin_ns)  # by position: a third cheaper than by keyword
    return Packet(header, events)


def released(packet: Packet) -> Packet:
    """``packet`` with its origin set to now (``time.time_ns()``): a source that holds packets
    back (pacing) stamps each as it lets it go."""
    header = packet.header
    packet.header = header.stamped(header.stream, header.seq, time.time_ns())
    return packet


def origin_fields(origin_ns: int, now_ns: int) -> dict:
    """What a sink adds to a record derived from a packet whose header says ``origin_ns``:
    ``origin_ns`` itself and ``e2e_latency_ns = now_ns - origin_ns`` (ns, host clock; None when
    the origin is unknown, 0). ``now_ns`` is the moment of delivery (publication, write)."""
    return {"origin_ns": origin_ns, "e2e_latency_ns": now_ns - origin_ns if origin_ns else None}


def json_packet(stream: str, seq: int, records: list[dict], t: int = 0,
                segment: Segment | None = None) -> Packet:
    """A data packet whose payload is a JSON array of objects (decisions, summaries)."""
    header = Header(stream=stream, seq=seq, dtype=JSON_DTYPE_NAME, t_first=t, t_last=t,
                    count=len(records), segment=segment)
    return Packet(header, list(records))


def eos_packet(stream: str, seq: int) -> Packet:
    """The end-of-stream message for ``stream``."""
    return Packet(Header(stream=stream, seq=seq, kind=EOS), np.empty(0, EVENT_DTYPE))


def encode_json_records(records: list) -> bytes:
    return json.dumps(records, separators=(",", ":")).encode()


def cut_points(t: np.ndarray, max_us: int, max_count: int) -> np.ndarray:
    """Indices where packets end, cutting by time or count, whichever comes first.

    A packet starts at its first event ``t0`` and holds the events with ``t < t0 + max_us``, at
    most ``max_count`` of them. ``t`` must be sorted. Returns the end index of each packet (the
    last equals ``len(t)``); an empty ``t`` gives no packets.
    """
    ends = []
    start, n = 0, len(t)
    while start < n:
        by_time = int(np.searchsorted(t, t[start] + max_us, side="left")) if max_us > 0 else n
        end = min(by_time, start + max_count) if max_count > 0 else by_time
        end = max(end, start + 1)
        ends.append(end)
        start = end
    return np.asarray(ends, dtype=np.int64)


class Packetizer:
    """Cuts a stream of event chunks into packets by sensor time (us) or count.

    Chunks are pushed as they are read; complete packets come out of ``push`` and the tail comes
    out of ``flush``. A packet is complete once a later event proves its time window closed, so
    latency is bounded by the window at any event rate.
    """

    def __init__(self, max_us: int = 1000, max_count: int = 10_000, dtype: np.dtype = EVENT_DTYPE):
        if max_us <= 0 and max_count <= 0:
            raise ValueError("a packetizer needs max_us > 0 or max_count > 0")
        self.max_us = max_us
        self.max_count = max_count
        self._empty = np.empty(0, dtype)
        self._pending = self._empty

    def push(self, events: np.ndarray) -> list[np.ndarray]:
        pending = concat_records([self._pending, events], self._empty.dtype) if len(self._pending) else events
        if len(pending) == 0:
            return []
        ends = cut_points(pending["t"], self.max_us, self.max_count)
        last_end = int(ends[-1])
        starts = np.concatenate([[0], ends[:-1]])
        # the last packet is kept back unless it is full or a later event closed its window
        keep_last = (ends[-1] - starts[-1]) < self.max_count if self.max_count > 0 else True
        if keep_last:
            last_end = int(starts[-1])
            ends = ends[:-1]
            starts = starts[:-1]
        out = [pending[s:e] for s, e in zip(starts, ends)]
        self._pending = pending[last_end:].copy() if last_end < len(pending) else self._empty
        return out

    def flush(self) -> list[np.ndarray]:
        pending, self._pending = self._pending, self._empty
        return [pending] if len(pending) else []
