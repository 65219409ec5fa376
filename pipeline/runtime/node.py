"""The node runtime: the loop around one source, stage or sink, its links and its metrics.

A ``NodeRunner`` owns the node's sockets (created in the thread that uses them) and:

- stamps every emitted packet with the node's stream name and the next sequence number, and
  sends it on every output link (each link stamps the host send time, ns);
- keeps the origin of the events (``Header.origin_ns``, host ns): a packet that ``process``
  returns without one of its own gets the origin of the input packet it was returned for, and
  one that ``finish`` returns gets the origin of the last input;
- calls ``process`` for each received data packet and ``finish`` once every input has delivered
  end of stream, then sends end of stream downstream;
- on ``stop()`` (SIGINT/SIGTERM): a source stops reading and ends its stream, so in-flight packets
  drain through the graph and sinks flush; a stage running on its own (``evpipe stage``) also
  stops, after emptying what its inputs already hold;
- when the node raises: logs the traceback, records the error, keeps draining its inputs
  (discarding) so upstream never blocks, still sends end of stream so downstream flushes, and
  reports failure; the graph then stops its sources and exits non-zero.
"""

from __future__ import annotations

import gc
import logging
import select
import sys
import threading
import time
import traceback

import zmq

from pipeline.core.nodetype import SOURCE
from pipeline.core.packet import Packet, eos_packet
from pipeline.runtime.config import Config, LinkSettings, NodeSettings
from pipeline.runtime.links import POLL_MS, Aborted, Receiver, Sender
from pipeline.runtime.metrics import MetricsReporter, NodeMetrics
from pipeline.runtime.registry import lookup

log = logging.getLogger(__name__)

SUBSCRIBER_WAIT_S = 10.0  # live links: how long a sender waits for its receiver to join


def default_address(link: LinkSettings, runner: str, run_dir: str) -> str:
    """The address of a link that does not name one: inproc for threads, ipc for processes."""
    if link.address:
        return link.address
    if runner == "threads":
        return f"inproc://evpipe/{link.source}/{link.target}"
    return f"ipc://{run_dir}/{link.source}--{link.target}.sock"


def freeze_heap() -> None:
    """Move every object alive now (modules, node state, compiled kernels) out of the garbage
    collector's reach. Its first full pass otherwise scans them all and stalls the node for
    25-45 ms (measured in a paced replay, bench_sensors), far beyond a 1 ms packet."""
    gc.collect()
    gc.freeze()


def stdout_closed() -> bool:
    """Whether standard output is a pipe whose reading end has closed (poll reports POLLERR);
    False when it is no file descriptor at all (replaced in-process, as test capture does)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def build_node(settings: NodeSettings):
    return lookup(settings.type).build(settings.name, settings.params)


class NodeRunner:
    """Runs one node of ``config`` until its stream ends; ``run`` returns the final snapshot."""

    def __init__(self, config: Config, name: str, ctx: zmq.Context, runner: str = "threads",
                 run_dir: str = "", collector: str = "", standalone: bool = False):
        self.config, self.name, self.ctx, self.runner = config, name, ctx, runner
        self.settings = config.nodes[name]
        self.run_dir, self.collector, self.standalone = run_dir, collector, standalone
        self.node = build_node(self.settings)
        self.metrics = NodeMetrics(name, self.settings.kind)
        self._stop = threading.Event()
        self._abort = threading.Event()
        self.receivers: list[Receiver] = []
        self.senders: list[Sender] = []
        self.seq = 0
        self.failed = False

    # control, from any thread --------------------------------------------------------------
    def stop(self) -> None:
        """Graceful stop: sources end their stream; everything else drains (see module doc)."""
        self._stop.set()
        if self.settings.kind == SOURCE:
            self.node.stop()

    def interrupt(self) -> None:
        """SIGINT/SIGTERM on a single node: the first stops gracefully, the second aborts."""
        self.abort() if self._stop.is_set() else self.stop()

    def abort(self) -> None:
        """Give up on blocked sends (the graph is being torn down after a failure)."""
        self._abort.set()
        self.stop()

    # the loop --------------------------------------------------------------------------------
    def _address(self, link: LinkSettings) -> str:
        return default_address(link, self.runner, self.run_dir)

    def _open(self) -> None:
        """Bind the outputs, wait (bounded) until every live output has its subscriber, then join
        the inputs. A node thus subscribes upstream only once everything downstream of it is
        listening, and a live source starts only when the whole graph is: nothing is published
        into a link nobody reads yet."""
        for link in self.config.outputs(self.name):
            self.senders.append(Sender(self.ctx, self._address(link), link.mode, link.hwm,
                                       aborting=self._abort.is_set))
        for sender in self.senders:
            if not sender.wait_for_subscriber(SUBSCRIBER_WAIT_S) and not self._abort.is_set():
                log.warning("node %r: nobody subscribed to %s within %.0f s; publishing anyway",
                            self.name, sender.address, SUBSCRIBER_WAIT_S)
        for link in self.config.inputs(self.name):
            self.receivers.append(Receiver(self.ctx, self._address(link), link.mode, link.hwm))

    def _emit(self, packets: list[Packet], arrival_ns: int | None = None, origin_ns: int = 0) -> None:
        """Send ``packets``, those without an origin of their own stamped with ``origin_ns``.
        ``arrival_ns`` (host ns) is when the input they were returned for arrived: the node's
        latency and the input's end-to-end latency so far (from ``origin_ns``) are sampled now."""
        for packet in packets:
            header = packet.header
            packet.header = header.stamped(self.name, self.seq, header.origin_ns or origin_ns)
            self.seq += 1
            for sender in self.senders:
                sender.send(packet)
            self.metrics.packets_out += 1
            self.metrics.records_out += packet.header.count
            self.metrics.dtypes_out.add(packet.header.dtype)
        if arrival_ns is not None:
            now = time.time_ns()
            self.metrics.latency_ns.append(now - arrival_ns)
            if origin_ns:
                self.metrics.e2e_ns.append(now - origin_ns)

    def _report(self, reporter: MetricsReporter) -> None:
        if reporter.due():
            reporter.send(self.metrics.snapshot(self.receivers, self.senders))

    def _fail(self, where: str, exc: BaseException) -> None:
        """Record and log a failure of the node's own code, with its traceback (without, when
        the reader of standard output went away: ``evpipe run | head``)."""
        self.failed = True
        self.metrics.error = f"{where}: {type(exc).__name__}: {exc}"
        if isinstance(exc, BrokenPipeError) and stdout_closed():
            log.error("node %r stopped in %s: its standard output was closed", self.name, where)
            return
        trace = "".join(traceback.format_exception(exc))
        log.error("node %r failed in %s:\n%s", self.name, where, trace)

    def _run_source(self, reporter: MetricsReporter) -> None:
        for packet in self.node.packets():
            self._emit([packet])
            self._report(reporter)
            if self._abort.is_set():
                break

    def _run_stage(self, reporter: MetricsReporter) -> int:
        """Process every input until each has ended; returns the origin of the last data packet."""
        poller = zmq.Poller()
        by_socket = {}
        for receiver in self.receivers:
            poller.register(receiver.sock, zmq.POLLIN)
            by_socket[receiver.sock] = receiver
        open_inputs = len(self.receivers)
        last_origin = 0  # of the last data packet: what finish() returns derives from it
        while open_inputs and not self._abort.is_set():
            ready = dict(poller.poll(0 if self._stop.is_set() and self.standalone else POLL_MS))
            if not ready and self._stop.is_set() and self.standalone:
                break  # standalone stop: inputs are empty, finish now
            for sock in ready:
                receiver = by_socket[sock]
                drained = 0
                while receiver.sock.poll(0, zmq.POLLIN):
                    packet = receiver.receive()
                    drained += 1
                    if packet is None:
                        continue
                    arrival = time.time_ns()
                    self.metrics.transit_ns.append(arrival - packet.header.sent_ns)
                    if packet.is_eos:
                        poller.unregister(sock)
                        open_inputs -= 1
                        break
                    self.metrics.dtypes_in.add(packet.header.dtype)
                    last_origin = packet.header.origin_ns
                    if self.failed:
                        continue  # draining after an error: discard, keep upstream moving
                    start = time.perf_counter_ns()
                    try:
                        out = self.node.process(packet)
                    except Exception as exc:  # the node's bug or bad data: report, keep draining
                        self._fail(f"process(packet seq {packet.header.seq} from {packet.header.stream})", exc)
                        continue
                    self.metrics.busy_ns += time.perf_counter_ns() - start
                    self._emit(out, arrival, last_origin)
                self.metrics.max_drained = max(self.metrics.max_drained, drained)
            self._report(reporter)
        return last_origin

    def run(self) -> dict:
        reporter = MetricsReporter(self.ctx, self.collector, self.config.graph.metrics_interval_s)
        try:
            if self.settings.kind != SOURCE:
                self.node.warm_up()  # before joining the links: upstream waits for this node
            self._open()
            freeze_heap()
            try:
                if self.settings.kind == SOURCE:
                    self._run_source(reporter)
                else:
                    last_origin = self._run_stage(reporter)
                    if not self.failed:
                        self._emit(self.node.finish(), origin_ns=last_origin)
            except Aborted:
                log.warning("node %r: sends abandoned during shutdown", self.name)
            except Exception as exc:  # reported; end of stream still goes downstream
                self._fail("run" if self.settings.kind == SOURCE else "finish", exc)
            try:
                for sender in self.senders:
                    sender.send(eos_packet(self.name, self.seq))
            except Aborted:
                log.warning("node %r: end of stream not delivered during shutdown", self.name)
        finally:
            try:
                self.node.close()
            except Exception as exc:  # reported in the final metrics
                self._fail("close", exc)
            final = self.metrics.snapshot(self.receivers, self.senders, final=True)
            reporter.send(final, final=True)
            reporter.close()
            for link in self.senders + self.receivers:
                link.close()
        return final
