"""Replay of recordings: one file, or a dataset folder where every file becomes one segment.

A dataset folder holds either files directly (unlabelled segments) or one subfolder per class
(``Train/<digit>/*.bin``): each file becomes a segment whose label is the subfolder name with
surrounding white space stripped (the shared N-MNIST folders end in a carriage return).

Pacing maps sensor time to wall time: a packet is released when ``wall - wall0 >=
(t_last - t0) / speed``, with the anchor (wall0, t0) set at each segment start, so files from
different time bases play back to back. ``speed = 0`` replays as fast as possible.

Every packet's ``origin_ns`` is the host time (``time.time_ns()``) at which the replay released
it: when its pacing wait ended, or, unpaced, when it was emitted. A replay stands in for a camera
that delivered the packet at that moment, so end-to-end latencies read as they would live.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from pipeline.core.events import EVENT_DTYPE
from pipeline.core.packet import Packet, Packetizer, Segment, events_packet, released
from sensors.readers import FormatError, formats, open_reader

log = logging.getLogger(__name__)

MAX_SLEEP_S = 0.05  # sleep in slices so stop() is honoured quickly


@dataclass(frozen=True)
class SegmentFile:
    path: str
    label: str | None


def dataset_files(root) -> list[SegmentFile]:
    """The files to replay under ``root`` (a file, a folder, or a folder of class folders)."""
    root = os.fspath(root)
    if os.path.isfile(root):
        return [SegmentFile(root, None)]
    if not os.path.isdir(root):
        raise FormatError(root, None, "no such file or folder")
    suffixes = {s for fmt in formats().values() for s in fmt.suffixes}
    entries = sorted(os.listdir(root))
    folders = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    if folders:
        files = [SegmentFile(os.path.join(root, folder, name), folder.strip())
                 for folder in sorted(folders, key=str.strip)
                 for name in sorted(os.listdir(os.path.join(root, folder)))
                 if os.path.splitext(name)[1] in suffixes]
    else:
        files = [SegmentFile(os.path.join(root, name), None)
                 for name in entries if os.path.splitext(name)[1] in suffixes]
    if not files:
        raise FormatError(root, None, f"no recordings found (looked for {sorted(suffixes)})")
    return files


def class_names(root) -> list[str]:
    """Sorted class labels of a dataset folder (empty for unlabelled data)."""
    return sorted({f.label for f in dataset_files(root) if f.label is not None})


class Pacer:
    """Holds sensor time (us) to wall time divided by ``speed``; ``speed <= 0`` never waits."""

    def __init__(self, speed: float, stopping=lambda: False):
        self.speed = speed
        self.stopping = stopping
        self.anchor: tuple[float, int] | None = None

    def reset(self) -> None:
        self.anchor = None

    def wait_until(self, t_us: int) -> None:
        if self.speed <= 0:
            return
        if self.anchor is None:
            self.anchor = (time.perf_counter(), t_us)
            return
        wall0, t0 = self.anchor
        due = wall0 + (t_us - t0) / 1e6 / self.speed
        while not self.stopping():
            left = due - time.perf_counter()
            if left <= 0:
                return
            # plain sleep (it overshoots by ~0.1 ms on Linux); never spin: a paced replay of
            # 1 ms packets would otherwise keep a core busy
            time.sleep(min(left, MAX_SLEEP_S))


TIME_POLICIES = ("keep", "sort", "drop")


class TimeOrder:
    """Policy for events whose t is below an earlier event's (sensor reordering, corrupt data).

    ``keep`` passes them on; ``sort`` sorts each packet by t (stable); ``drop`` removes them.
    ``backwards`` counts the events found out of order (before the policy applied), over all
    packets seen.
    """

    def __init__(self, policy: str = "keep"):
        if policy not in TIME_POLICIES:
            raise ValueError(f"timestamp policy must be one of {TIME_POLICIES}, not {policy!r}")
        self.policy = policy
        self.latest = None
        self.backwards = 0

    def apply(self, events: np.ndarray) -> np.ndarray:
        if not len(events):
            return events
        t = events["t"]
        running = np.maximum.accumulate(t if self.latest is None else np.maximum(t, self.latest))
        late = t < running
        found = int(np.count_nonzero(late))
        self.backwards += found
        self.latest = int(running[-1])
        if not found or self.policy == "keep":
            return events
        if self.policy == "drop":
            return events[~late]
        return events[np.argsort(t, kind="stable")]


def segment_packets(stream: str, chunks, width: int, height: int, packetizer: Packetizer,
                    segment: Segment, order: TimeOrder | None = None) -> Iterator[Packet]:
    """Packets of one segment, the first marked ``start`` and the last marked ``end``.

    A segment with no events still yields one empty packet carrying both markers. ``order``
    applies a timestamp policy to every packet.
    """

    def cuts():
        for chunk in chunks:
            yield from packetizer.push(chunk)
        yield from packetizer.flush()

    previous, marker = None, replace(segment, start=True)  # the first packet's, then the rest's
    for cut in cuts():
        cut = order.apply(cut) if order is not None else cut
        if previous is not None:
            yield events_packet(stream, 0, previous, width, height, marker)
            marker = segment
        previous = cut
    if previous is None:
        previous = np.empty(0, EVENT_DTYPE)
    yield events_packet(stream, 0, previous, width, height, replace(marker, end=True))


def window(chunks, start_us: int, stop_us: int) -> Iterator[np.ndarray]:
    """Chunks restricted to ``start_us <= t - t_first < stop_us`` (stop 0 means no limit)."""
    t_first = None
    for chunk in chunks:
        if not len(chunk):
            continue
        if t_first is None:
            t_first = int(chunk["t"][0])
        rel = chunk["t"] - t_first
        keep = rel >= start_us
        if stop_us > 0:
            keep &= rel < stop_us
            if rel[0] >= stop_us:
                return
        yield chunk[keep] if not keep.all() else chunk


class Replay:
    """Replays a file or dataset folder as packets (the ``replay`` source's engine)."""

    def __init__(self, stream: str, path, format: str = "auto", speed: float = 0.0,
                 loop: bool = False, start_us: int = 0, stop_us: int = 0,
                 packet_us: int = 1000, packet_events: int = 10_000, width: int = 0,
                 height: int = 0, stopping=lambda: False, timestamps: str = "keep"):
        self.stream = stream
        self.files = dataset_files(path)
        self.format = format
        self.loop = loop
        self.start_us, self.stop_us = start_us, stop_us
        self.packet_us, self.packet_events = packet_us, packet_events
        self.size = dict(width=width, height=height) if width and height else {}
        self.stopping = stopping
        self.pacer = Pacer(speed, stopping)
        self.order = TimeOrder(timestamps)  # .backwards counts out-of-order events
        self.skipped: list[str] = []  # errors of recordings that could not be read
        self.skip = 0  # packets() passes over its first `skip` packets, unpaced (a resume)
        self._made = 0  # packets made so far, passed over or not

    @property
    def unreadable(self) -> bool:
        """No file has made a packet, and some could not be read (``skipped``)."""
        return bool(self.skipped) and not self._made

    def packets(self) -> Iterator[Packet]:
        """All packets, segment after segment, each stamped with its release time (``origin_ns``);
        segment ids count the segments sent: 0, 1, 2 ...

        A file that turns out unreadable is logged with its error (which names the file), listed
        in ``skipped``, and: if it failed before its first packet, sends nothing and takes no
        segment id, so ids stay one-to-one with the files that produced packets, in order; if it
        had started, its segment is closed with an empty end packet and keeps its id.
        """
        segment_id = 0
        while True:
            for item in self.files:
                if self.stopping():
                    return
                segment = Segment(segment_id, label=item.label, name=os.path.basename(item.path))
                started = None
                try:
                    for packet in self._segment(item, segment):
                        started = packet
                        self._made += 1
                        if self._made > self.skip:
                            yield released(packet)
                        if self.stopping():
                            return
                except FormatError as exc:
                    self.skipped.append(str(exc))
                    log.error("skipping unreadable recording: %s", exc)
                    self._made += started is not None
                    if started is not None and self._made > self.skip:
                        yield released(events_packet(self.stream, 0, np.empty(0, EVENT_DTYPE),
                                                     started.header.width, started.header.height,
                                                     replace(segment, end=True)))
                if started is not None:
                    segment_id += 1
            if not self.loop or not segment_id:  # a loop over files none of which can be read ends
                return

    def _segment(self, item: SegmentFile, segment: Segment) -> Iterator[Packet]:
        reader = open_reader(item.path, self.format, **self.size)
        packetizer = Packetizer(self.packet_us, self.packet_events)
        chunks = window(reader.chunks(), self.start_us, self.stop_us)
        self.pacer.reset()
        self.order.latest = None  # each file has its own time base
        for packet in segment_packets(self.stream, chunks, reader.width, reader.height, packetizer,
                                      segment, self.order):
            if len(packet.records) and self._made >= self.skip:
                self.pacer.wait_until(packet.header.t_last)
            yield packet
