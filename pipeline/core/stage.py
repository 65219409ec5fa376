"""The stage model: sources emit packets, stages turn packets into packets, sinks consume them.

A node knows nothing about sockets. The runtime (``pipeline.runtime.worker``) owns the loop, the links,
metrics and shutdown, and stamps every emitted packet with the node's stream name, its sequence
number and the host send time. The same objects run in-process with ``run_chain``, which is how
evaluation runs exactly the code of the live pipeline.

Rules for implementers: ``process`` is called once per data packet in arrival order; it must not
modify the records it receives (they may view a ZeroMQ buffer) nor the records it has returned.
``finish`` is called once after every input has ended and returns the last packets (flushes).
The packets a stage returns are new ``Packet`` objects, never one it was given: the runtime sets
their headers, and the packet it was given may go to other nodes as well. A stage that forwards
a packet unchanged returns a new one over the same header and records (``PassThrough``).

Origins: every packet keeps the host time at which its source obtained the events it derives
from (``Header.origin_ns``, what end-to-end latency is measured from). The runtime copies the
input packet's ``origin_ns`` to every packet ``process(packet)`` returns, unless the stage set
one itself; packets from ``finish`` get the origin of the last input. A stage that emits what it
received needs no code for it; one that holds events back and releases them with a later packet
should set the origin of the events it releases, or its output looks younger than it is.
``run_chain`` leaves headers as the stages return them: in-process runs measure no host latency.
"""

from __future__ import annotations

import threading
from typing import Iterable, Iterator

import numpy as np

from pipeline.core import wire
from pipeline.core.events import dtype_by_name
from pipeline.core.packet import Packet, Segment, events_packet


class Stage:
    """A processing node: ``process(packet) -> packets``."""

    def __init__(self, name: str):
        self.name = name

    def process(self, packet: Packet) -> list[Packet]:
        raise NotImplementedError

    def finish(self) -> list[Packet]:
        """Packets still held back when every input has ended (default: none)."""
        return []

    def warm_up(self) -> None:
        """Load or compile now what the first packet would (numba kernels load from their cache
        on first call: tens to hundreds of ms). The runtime calls it before the node joins its
        links, so a live graph's first decision pays no start-up cost (default: nothing)."""

    def close(self) -> None:
        """Release files and other resources; called once, also after an error."""

    def counters(self) -> dict[str, int]:
        """Counts of the node's own that its metrics should carry (name -> count: decisions
        delivered to nobody, clients refused, ...); read with every report and after
        ``close`` (default: none)."""
        return {}


class Sink(Stage):
    """A stage with no outputs; ``process`` returns nothing downstream.

    ``resume()`` is called once, before any packet, when the sink's process is restarted after
    it died having handled packets (``pipeline.runtime.recovery``): the runtime passes it only
    what it had not handled yet, so a sink that writes a file must add to it rather than start
    it again. Sinks that keep everything until ``finish`` cannot resume what they held."""

    def resume(self) -> None:
        """Go on from what an earlier process of this sink delivered (default: nothing to do)."""

    def process(self, packet: Packet) -> list[Packet]:
        self.consume(packet)
        return []

    def consume(self, packet: Packet) -> None:
        raise NotImplementedError


class Source:
    """A node with no inputs: ``packets()`` yields data packets until exhausted or stopped.

    ``paced``: whether ``packets()`` waits for time or data between packets (a camera, a network
    stream, a replay at a finite speed). The runtime then passes each packet on as it comes; from
    an unpaced source (a replay at ``speed = 0``) it may batch packets on lossless links, whose
    throughput then counts more than the latency of a single packet."""

    paced = True

    def __init__(self, name: str):
        self.name = name
        self._stop = threading.Event()

    def packets(self) -> Iterator[Packet]:
        raise NotImplementedError

    def resume_at(self, n: int) -> bool:
        """Make ``packets()`` begin with its packet ``n`` (0-based), those before it passed over
        quickly, as when the source started afresh: a restart after its process died
        (``pipeline.runtime.recovery``). False when it cannot make them again (a live sensor):
        it then goes on with what comes now."""
        return False

    def stop(self) -> None:
        """Ask ``packets()`` to end early (SIGINT, shutdown); safe from any thread."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Release files, cameras and connections."""


def run_chain(packets: Iterable[Packet], stages: list[Stage]) -> list[Packet]:
    """Push packets through ``stages`` in order, in-process; returns what the last stage emits.

    Each stage's ``finish`` runs after the input is exhausted, and its output goes through the
    stages after it, exactly as end-of-stream propagates through a running graph.
    """
    out: list[Packet] = []

    def feed(index: int, items: list[Packet]) -> None:
        if index == len(stages):
            out.extend(items)
            return
        for packet in items:
            feed(index + 1, stages[index].process(packet))

    for packet in packets:
        feed(0, [packet])
    for index, stage in enumerate(stages):
        feed(index + 1, stage.finish())
    return out


def warm_up_packets(kind: str, width: int, height: int,
                    segment: Segment | None = None) -> list[Packet]:
    """Packets for ``Stage.warm_up``: one and two records of ``kind`` at pixel (0, 0), t = 0 and
    1 us, as a receiver gets them off a link (decoded from the wire: read-only field views).
    numba compiles one kernel per memory layout, and one record is contiguous where two are
    strided, so both are needed to load what real packets will call."""
    out = []
    for n in (1, 2):
        records = np.zeros(n, dtype_by_name(kind))
        records["t"] = np.arange(n)
        out.append(wire.decode(wire.encode(events_packet("warm-up", 0, records, width, height,
                                                         segment, kind))))
    return out

