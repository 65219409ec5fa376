"""Live dv-processing inputs (cameras, DV network streams) as packet sources, with reconnection.

Both ``dv_processing.io.camera`` devices and ``dv_processing.io.NetworkReader`` expose
``getNextEventBatch()`` (an ``EventStore`` or None when nothing is ready), ``getEventResolution()``
and ``isRunning()``. ``DvSource`` turns their batches into packets the same way for both: each
batch is cut by time (``packet_us``) or count (``packet_events``) and sent at once (a live
source never holds events back waiting for the next batch), each stamped with the host time
at which its batch was received (``origin_ns``, ``time.time_ns()``). When the input stops running or
cannot be opened, it is reopened with exponential backoff while the rest of the graph keeps
running; ``reconnects`` counts the successful reopenings. The first failure of a series is
logged in one line, the rest only when they end (connected again, or given up after
``retries`` attempts in a row, when that is not 0: the stream then ends). With
``end_on_close``, a server that closes its stream ends the source's stream too.
"""

from __future__ import annotations

import logging
import time
from typing import Iterator

from pipeline.core.packet import Packet, Packetizer, events_packet
from pipeline.core.stage import Source
from sensors.dv_events import dv_message, from_dv

log = logging.getLogger(__name__)
POLL_S = 0.001  # wait between polls when no batch is ready
SLEEP_SLICE_S = 0.05  # sleep in slices so stop() is honoured quickly
# what dv-processing raises when an input cannot be opened (no camera found: IndexError)
OPEN_ERRORS = (RuntimeError, IndexError, OSError)
REASON_CHARS = 120  # dv-processing's messages run to hundreds of characters: cut


def reason(exc: BaseException) -> str:
    """``exc``'s message (``dv_message``), at most ``REASON_CHARS`` characters."""
    text = dv_message(exc)
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


class Backoff:
    """Delays (s) that double from ``initial`` up to ``maximum``; ``reset`` after a success."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0):
        self.initial, self.maximum = initial, maximum
        self.delay = initial

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.delay = self.initial


class DvSource(Source):
    """Base of the camera and network sources: subclasses implement ``open()`` and ``describe()``."""

    def __init__(self, name: str, packet_us: int = 1000, packet_events: int = 10_000,
                 backoff_s: float = 0.1, backoff_max_s: float = 5.0, retries: int = 0,
                 end_on_close: bool = False):
        super().__init__(name)
        self.packet_us, self.packet_events = packet_us, packet_events
        self.backoff = Backoff(backoff_s, backoff_max_s)
        self.retries, self.end_on_close = retries, end_on_close
        self.reconnects = 0
        self.input = None

    def open(self):
        """A running dv-processing input; raises one of OPEN_ERRORS when it cannot be opened."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(SLEEP_SLICE_S, max(end - time.monotonic(), 0)))

    def _connect(self) -> bool:
        """Open the input, waiting with backoff between failures; False when stopped first or
        given up after ``retries`` failed attempts in a row."""
        opened_before = self.input is not None
        failures = 0
        while not self.stopping:
            try:
                self.input = self.open()
            except OPEN_ERRORS as exc:
                failures += 1
                if self.retries and failures >= self.retries:
                    log.error("%s: cannot open %s (%s); gave up after %d attempts", self.name,
                              self.describe(), reason(exc), failures)
                    return False
                if failures == 1:
                    log.warning("%s: cannot open %s (%s); retrying with backoff up to %.1f s%s",
                                self.name, self.describe(), reason(exc), self.backoff.maximum,
                                f", {self.retries} attempts at most" if self.retries else "")
                self._sleep(self.backoff.next())
                continue
            if opened_before:
                self.reconnects += 1
            self.backoff.reset()
            log.info("%s: connected to %s%s", self.name, self.describe(),
                     f" after {failures + 1} attempts" if failures else "")
            return True
        return False

    def packets(self) -> Iterator[Packet]:
        packetizer = Packetizer(self.packet_us, self.packet_events)
        while self._connect():
            width, height = self.input.getEventResolution()
            while not self.stopping:
                try:
                    batch = self.input.getNextEventBatch() if self.input.isRunning() else None
                except RuntimeError as exc:
                    log.warning("%s: %s failed (%s)", self.name, self.describe(), reason(exc))
                    batch = None
                if batch is None:
                    if not self.input.isRunning():
                        if self.end_on_close:
                            log.info("%s: %s closed its stream; ending", self.name, self.describe())
                            return
                        log.warning("%s: %s went away; reconnecting", self.name, self.describe())
                        break
                    time.sleep(POLL_S)
                    continue
                received = time.time_ns()
                events = from_dv(batch).copy()  # the store's buffer dies with the batch
                for cut in packetizer.push(events) + packetizer.flush():
                    yield events_packet(self.name, 0, cut, width, height, origin_ns=received)
            self.input = None if self.stopping else self.input

    def close(self) -> None:
        self.input = None
