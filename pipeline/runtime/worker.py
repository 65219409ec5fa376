"""The worker runtime: one thread running one or more nodes, their links and their metrics.

Which nodes share a worker is the graph's placement (``pipeline.runtime.placement``). A link
between two nodes of one worker is a direct call: the packets a node returns go straight into
the next node's ``process``, depth first, in order, without encoding, copies or sockets (a stage
never modifies the records it receives or returns, ``pipeline.core.stage``, so they can be
shared). Every other link is a ZeroMQ socket, owned by the worker (created in the thread that
uses it). For every node, the worker:

- stamps every emitted packet with the node's stream name, the next sequence number and the host
  send time (ns; a socket link stamps it again as it sends), and sends it on every socket output
  before handing it to the direct ones;
- keeps the origin of the events (``Header.origin_ns``, host ns): a packet that ``process``
  returns without one of its own gets the origin of the input packet it was returned for, and
  one that ``finish`` returns gets the origin of the last input;
- calls ``process`` for each data packet and ``finish`` once every input has delivered end of
  stream, then ends its outputs (end of stream on sockets; on a direct link, one input fewer);
- keeps the node's own metrics, as if it ran alone: packets and records in and out, time in
  ``process``, latency (arrival to results handed on, not counting the work of direct
  downstream nodes), end-to-end latency; transit only across sockets;
- on ``stop()`` (SIGINT/SIGTERM): a source stops reading and ends its stream, so in-flight packets
  drain through the graph and sinks flush; a node running on its own (``evpipe stage``) also
  stops, after emptying what its inputs already hold. A send still blocked after the stop gives
  up once its receiving end has been unheard for the link's ``peer_timeout_s`` (its process is
  gone, or never came), or ``STOP_DRAIN_S`` after the stop at the latest: the node reports what
  it could not deliver as its error, and the worker ends. Likewise an input whose sender has been
  unheard for ``peer_timeout_s`` after the stop, with nothing queued, counts as ended, so the
  nodes downstream of a process that is gone still finish, flush and close;
- with a resume folder (the processes runner, ``evpipe stage``): keeps the worker's resume
  points and its sinks' marks there (``pipeline.runtime.recovery``), and, when it finds them at
  start, resumes: every node numbers its packets as it did at the resume point, each socket
  input asks its sender to resend from there, a replay source passes over what it had sent,
  and each sink skips what it had handled;
- sends heartbeats on idle links and reports peers it has not heard from
  (``pipeline.runtime.links``);
- when a node raises: logs the traceback, records the error, keeps draining that node's inputs
  (discarding) so upstream never blocks, still ends its outputs so downstream flushes, and
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

from pipeline.core.files import file_problem
from pipeline.core.nodetype import SINK, SOURCE
from pipeline.core.packet import Packet, eos_packet
from pipeline.runtime.config import Config, ConfigError, LinkSettings, NodeSettings
from pipeline.runtime.links import POLL_MS, Aborted, Receiver, ReceiverGone, ReceiveStats, Sender
from pipeline.runtime.metrics import MetricsReporter, NodeMetrics
from pipeline.runtime.recovery import Recovery
from pipeline.runtime.registry import lookup
from pipeline.security import Guard
from sensors.readers import FormatError

log = logging.getLogger(__name__)

SUBSCRIBER_WAIT_S = 10.0  # live links: how long a sender waits for its receiver to join
QUIET_WAIT_S = 1.0  # ... of which the first second without saying so (graphs start that fast)
STOP_DRAIN_S = 10.0  # after a stop, how long sends may wait for receivers that take nothing
SAVE_INTERVAL_S = 0.02  # resume points are saved, and acknowledged upstream, at most this often
DRAIN_MESSAGES = 16  # messages taken from one input before the other inputs, the held-back sends
# and the resume points get their turn (an input that never runs dry must not starve them)


def default_address(link: LinkSettings, runner: str, run_dir: str) -> str:
    """The address of a socket link that does not name one: inproc for threads, ipc for
    processes."""
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
    """The source, stage or sink object a node's settings describe."""
    return lookup(settings.type).build(settings.name, settings.params)


class Slot:
    """One node inside a worker: the node object, its metrics and its ends of the links."""

    def __init__(self, settings: NodeSettings, index: int):
        self.settings, self.name, self.index = settings, settings.name, index
        self.is_source = settings.kind == SOURCE
        self.is_sink = settings.kind == SINK
        self.mark = -1  # a sink: sequence number of the last packet an earlier process handled
        self.node = build_node(settings)
        self.metrics = NodeMetrics(settings.name, settings.kind)
        self.seq = 0
        self.failed = False
        self.ended = False
        self.open_inputs = 0  # inputs, socket or direct, that have not ended yet
        self.last_origin = 0  # of the last data packet: what finish() returns derives from it
        self.senders: list[Sender] = []
        self.receivers: list[Receiver] = []
        self.direct_out: list[tuple[Slot, ReceiveStats]] = []  # downstream slot, its input's counts
        self.direct_in: list[ReceiveStats] = []

    def snapshot(self, final: bool = False) -> dict:
        counters = {} if self.is_source else self.node.counters()
        return self.metrics.snapshot([r.stats for r in self.receivers] + self.direct_in,
                                     [s.stats for s in self.senders], final=final,
                                     counters=counters)


class Worker:
    """Runs the nodes ``names`` of ``config`` (topological order) until every one has ended;
    ``run`` returns their final snapshots. ``direct``: the (source, target) links inside the
    worker that are direct calls; every other link of these nodes is a socket. ``opened`` and
    ``go`` (threading or multiprocessing events, or None to start at once): the worker sets
    ``opened`` when its links are open, and its source starts reading at ``go``.
    ``resume_dir``: where the worker keeps its resume points ("" for none: threads cannot die
    alone, so their lossless links need no acknowledgements)."""

    def __init__(self, config: Config, names, ctx: zmq.Context, runner: str = "threads",
                 run_dir: str = "", collector: str = "", standalone: bool = False,
                 direct=frozenset(), opened=None, go=None, resume_dir: str = ""):
        self.config, self.ctx, self.runner = config, ctx, runner
        self.run_dir, self.collector, self.standalone = run_dir, collector, standalone
        self.resume_dir = resume_dir
        self.slots = {name: self._slot(name, index) for index, name in enumerate(names)}
        self.direct = frozenset(direct)
        self.source = next((slot for slot in self.slots.values() if slot.is_source), None)
        self.opened, self.go = opened, go
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._give_up: threading.Timer | None = None  # started by the first stop
        self._gave_up = False
        self.guard = Guard(ctx)  # ZAP handler of CURVE links, started by the first one
        # recovery (pipeline.runtime.recovery), its inputs in order (the socket receivers, or
        # none for a source), when it may next save a point, whether to log the first packet
        # handled after a restart
        self.recovery: Recovery | None = None
        self.inputs: list[Receiver] = []
        self.next_save = 0.0
        self.first_after_restart = False

    @property
    def failed(self) -> bool:
        return any(slot.failed for slot in self.slots.values())

    def _slot(self, name: str, index: int) -> Slot:
        """Node ``name`` built; ConfigError naming it when a file it names cannot be opened (a
        recording missing or unreadable, an output that cannot be created)."""
        settings = self.config.nodes[name]
        try:
            return Slot(settings, index)
        except FormatError as exc:
            problem = str(exc)
        except OSError as exc:
            problem = file_problem(exc)
        raise ConfigError(f"{self.config.path}: {settings.kind}.{name}: {problem}")

    # control, from any thread --------------------------------------------------------------
    def stop(self) -> None:
        """Graceful stop: a source ends its stream; everything else drains (see module doc)."""
        self._stop.set()
        if self.source is not None:
            self.source.node.stop()
        if self._give_up is None:
            self._give_up = threading.Timer(STOP_DRAIN_S, self._stop_waiting)
            self._give_up.daemon = True
            self._give_up.start()

    def _stop_waiting(self) -> None:
        """Still running ``STOP_DRAIN_S`` after the stop: blocked sends give up."""
        self._gave_up = True
        self._abort.set()

    def interrupt(self) -> None:
        """SIGINT/SIGTERM: the first stops gracefully, the second aborts."""
        self.abort() if self._stop.is_set() else self.stop()

    def abort(self) -> None:
        """Give up on blocked sends (the graph is being torn down after a failure)."""
        self._abort.set()
        self.stop()

    # set-up ----------------------------------------------------------------------------------
    def _address(self, link: LinkSettings) -> str:
        return default_address(link, self.runner, self.run_dir)

    def _open(self) -> None:
        """Join the direct links; bind the socket outputs, wait (bounded) until every live one has
        its subscriber, then connect the socket inputs. A worker thus subscribes upstream only
        once everything downstream of it is listening, and a live source starts only when the
        whole graph is: nothing is published into a link nobody reads yet."""
        for slot in self.slots.values():
            for link in self.config.outputs(slot.name):
                if (link.source, link.target) in self.direct:
                    stats = ReceiveStats()
                    target = self.slots[link.target]
                    slot.direct_out.append((target, stats))
                    target.direct_in.append(stats)
                    target.open_inputs += 1
                else:
                    curve = ((self.guard, link.curve_server, link.curve_clients, link.name)
                             if link.curve else None)
                    slot.senders.append(self._sender(link, curve))
        for slot in self.slots.values():
            for sender in slot.senders:
                if sender.wait_for_subscriber(QUIET_WAIT_S):
                    continue
                log.info("node %r: waiting up to %.0f s more for a subscriber on %s", slot.name,
                         SUBSCRIBER_WAIT_S, sender.address)
                if not sender.wait_for_subscriber(SUBSCRIBER_WAIT_S) and not self._abort.is_set():
                    log.warning("node %r: nobody subscribed to %s within %.0f s; going on, every "
                                "packet nobody receives counted as dropped", slot.name,
                                sender.address, SUBSCRIBER_WAIT_S)
        links = [(slot, link) for slot in self.slots.values()
                 for link in self.config.inputs(slot.name)
                 if (link.source, link.target) not in self.direct]
        self._load_resume_point(len(links) if self.source is None else 1)
        for index, (slot, link) in enumerate(links):
            curve = (link.curve_server, link.curve_client) if link.curve else None
            receiver = Receiver(self.ctx, self._address(link), link.mode, link.hwm,
                                link.max_message_bytes, curve, self._exactly_once(link),
                                self.recovery and self.recovery.start_seq(index), link.heartbeat_s,
                                link.peer_timeout_s, defer_end=self._exactly_once(link))
            slot.receivers.append(receiver)
            self.inputs.append(receiver)
            slot.open_inputs += 1

    def _sender(self, link: LinkSettings, curve) -> Sender:
        """The sending end of ``link``, bound; ConfigError naming the link and the address when
        it cannot be bound (a tcp port in use, an ipc path in a missing folder)."""
        address = self._address(link)
        try:
            return Sender(self.ctx, address, link.mode, link.hwm, aborting=self._abort.is_set,
                          batch=True, curve=curve, exactly_once=self._exactly_once(link),
                          resend_packets=link.resend_packets, resend_bytes=link.resend_bytes,
                          heartbeat_s=link.heartbeat_s, peer_timeout_s=link.peer_timeout_s,
                          stopping=self._stop.is_set)
        except zmq.ZMQError as exc:
            raise ConfigError(f"{self.config.path}: link {link.name}: cannot bind {address} "
                              f"({zmq.strerror(exc.errno)})") from None

    def _exactly_once(self, link: LinkSettings) -> bool:
        return link.exactly_once and bool(self.resume_dir)

    def _load_resume_point(self, n_inputs: int) -> None:
        """Open the worker's recovery file; when it holds a point, number every node's packets
        from it and tell each sink what it had delivered."""
        if not self.resume_dir:
            return
        self.recovery = recovery = Recovery(self.resume_dir, self.slots, n_inputs,
                                            all(slot.is_sink for slot in self.slots.values()))
        if recovery.node_seqs is None:
            return
        for slot, seq, mark in zip(self.slots.values(), recovery.node_seqs, recovery.marks()):
            slot.seq = max(seq, 0)
            if slot.is_sink and mark >= 0:
                slot.mark = mark
                slot.node.resume()
        log.info("resuming %s at packet(s) %s of its input(s), after a restart",
                 "+".join(self.slots), ", ".join(map(str, recovery.resume_seqs)))
        self.first_after_restart = True

    # the packet path -------------------------------------------------------------------------
    def _emit(self, slot: Slot, packets: list[Packet], arrival_ns: int | None = None,
              origin_ns: int = 0) -> None:
        """Send ``packets`` of ``slot``, those without an origin of their own stamped with
        ``origin_ns``, then hand them to the direct links. ``arrival_ns`` (host ns) is when the
        input they were returned for arrived: the node's latency and the input's end-to-end
        latency so far (from ``origin_ns``) are sampled once the sockets have them, and that
        moment is when the direct links' nodes receive them."""
        metrics, senders = slot.metrics, slot.senders
        now = time.time_ns()
        records = 0
        for packet in packets:
            header = packet.header
            packet.header = header = header.stamped(slot.name, slot.seq,
                                                    header.origin_ns or origin_ns, now)
            slot.seq += 1
            for sender in senders:
                sender.send(packet)
            records += header.count
            metrics.dtypes_out.add(header.dtype)
        metrics.packets_out += len(packets)
        metrics.records_out += records
        if senders:
            now = time.time_ns()
        if arrival_ns is not None:
            metrics.latency_ns.append(now - arrival_ns)
            if origin_ns:
                metrics.e2e_ns.append(now - origin_ns)
        if packets:
            for target, stats in slot.direct_out:
                stats.packets += len(packets)
                stats.events += records
                for packet in packets:
                    self._process(target, packet, now)

    def _process(self, slot: Slot, packet: Packet, arrival_ns: int) -> None:
        """Run one data packet through ``slot``'s node and emit what it returns."""
        header = packet.header
        slot.metrics.dtypes_in.add(header.dtype)
        slot.last_origin = origin = header.origin_ns
        if slot.failed or header.seq <= slot.mark:
            # draining after an error (discard, keep upstream moving), or a resumed sink whose
            # earlier process handled this packet
            return
        start = time.perf_counter_ns()
        try:
            out = slot.node.process(packet)
        except Exception as exc:  # the node's bug or bad data: report, keep draining
            self._fail(slot, f"process(packet seq {header.seq} from {header.stream})", exc)
            return
        slot.metrics.busy_ns += time.perf_counter_ns() - start
        if slot.is_sink and self.recovery is not None:
            self.recovery.mark(slot.index, header.seq)
        self._emit(slot, out, arrival_ns, origin)

    def _end(self, slot: Slot) -> None:
        """Every input of ``slot`` has ended (a source: its loop has): flush its node and end its
        outputs."""
        slot.ended = True
        if not slot.is_source and not slot.failed:
            try:
                out = slot.node.finish()
            except Exception as exc:  # reported; its outputs still end
                self._fail(slot, "finish", exc)
            else:
                try:
                    self._emit(slot, out, origin_ns=slot.last_origin)
                except Aborted as exc:
                    self._abandoned(slot, "what finish returned", exc)
        for sender in slot.senders:  # each on its own: one receiver gone leaves the others theirs
            try:
                sender.send(eos_packet(slot.name, slot.seq))
            except Aborted as exc:
                self._abandoned(slot, "end of stream", exc)
        for target, _ in slot.direct_out:
            self._input_ended(target)

    def _input_ended(self, slot: Slot) -> None:
        slot.open_inputs -= 1
        if slot.open_inputs == 0 and not slot.ended:
            self._end(slot)

    def _abandoned(self, slot: Slot, what: str, why: Aborted) -> None:
        """A send of ``slot`` gave up: an error of the node when no receiver took it within
        ``STOP_DRAIN_S`` of the stop or its receiver fell silent after the stop
        (``ReceiverGone``), a warning when the graph tore the worker down."""
        if isinstance(why, ReceiverGone):
            slot.metrics.error = f"{what} not delivered: {why}"
        elif self._gave_up:
            slot.metrics.error = (f"{what} not delivered: no receiver took it within "
                                  f"{STOP_DRAIN_S:.0f} s of the stop")
        else:
            log.warning("node %r: %s abandoned during shutdown", slot.name, what)
            return
        slot.failed = True
        log.error("node %r: %s", slot.name, slot.metrics.error)

    def _fail(self, slot: Slot, where: str, exc: BaseException) -> None:
        """Record and log a failure of a node's own code, with its traceback (without, when the
        reader of standard output went away: ``evpipe run | head``, or for bad input or a file that
        cannot be read or written, which the FormatError or OSError names)."""
        slot.failed = True
        slot.metrics.error = f"{where}: {type(exc).__name__}: {exc}"
        if isinstance(exc, BrokenPipeError) and stdout_closed():
            log.error("node %r stopped in %s: its standard output was closed", slot.name, where)
            return
        if isinstance(exc, FormatError):
            log.error("node %r stopped in %s: %s", slot.name, where, exc)
            return
        if isinstance(exc, OSError) and exc.filename:  # a file it reads or writes, named
            log.error("node %r stopped in %s: %s", slot.name, where, file_problem(exc))
            return
        trace = "".join(traceback.format_exception(exc))
        log.error("node %r failed in %s:\n%s", slot.name, where, trace)

    # the loops -------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Send what the batching senders hold: the worker is about to wait (for input, or its
        source for time or data)."""
        for slot in self.slots.values():
            for sender in slot.senders:
                sender.flush()

    def _waiting(self) -> None:
        """The worker is about to wait: send what is held back, then ``_maintain``."""
        self._flush()
        self._maintain()

    def _maintain(self) -> None:
        """At most every ``SAVE_INTERVAL_S``: save the resume point if a newer one is safe, and
        keep idle links' heartbeats going."""
        now = time.monotonic()
        if now < self.next_save:
            return
        self.next_save = now + SAVE_INTERVAL_S
        if self.recovery is not None:
            self._save_point()
        for slot in self.slots.values():
            for link in slot.senders + slot.receivers:
                link.beat(now)

    def _candidate(self, index: int, seq: int, packet: Packet) -> None:
        """Before handling ``packet`` of input ``index``: perhaps a resume point
        (``Recovery.note``)."""
        if self.recovery is not None:
            self.recovery.note(index, seq, packet, self._node_seqs)

    def _node_seqs(self) -> list[int]:
        """Every node's next sequence number, in order."""
        return [slot.seq for slot in self.slots.values()]

    def _save_point(self) -> None:
        """Save the newest resume point every downstream worker has acknowledged (it will never
        need a packet made before it), then acknowledge it upstream."""
        acked = []
        for slot in self.slots.values():
            for sender in slot.senders:
                if sender.exactly_once:
                    sender.control()
                    acked.append((sender.acked, slot.index))
        if self.recovery.advance(acked):
            for receiver, seq in zip(self.inputs, self.recovery.resume_seqs):
                if seq >= 0 and receiver.exactly_once:
                    receiver.resumed(seq)

    def _report(self, reporter: MetricsReporter) -> None:
        if reporter.due():
            for slot in self.slots.values():
                reporter.send(slot.snapshot())

    def _run_source(self, reporter: MetricsReporter) -> None:
        slot = self.source
        while self.go is not None and not self.go.wait(POLL_MS / 1e3) and not self._stop.is_set():
            pass  # the rest of the graph is still loading
        for each in self.slots.values():
            each.metrics.start()
        self._resume_source(slot)
        try:
            paced = slot.node.paced
            for packet in slot.node.packets():
                self._candidate(0, slot.seq, packet)
                self._emit(slot, [packet])
                if self.first_after_restart:
                    self._first_packet_again(packet)
                if paced:
                    self._waiting()
                else:
                    self._maintain()
                self._report(reporter)
                if self._abort.is_set():
                    break
        except Aborted as exc:
            self._abandoned(slot, "packets", exc)
        except Exception as exc:  # reported; end of stream still goes downstream
            self._fail(slot, "run", exc)
        self._end(slot)

    def _first_packet_again(self, packet: Packet) -> None:
        self.first_after_restart = False
        log.info("first packet handled again after the restart: seq %d of %s",
                 packet.header.seq, packet.header.stream)

    def _resume_source(self, slot: Slot) -> None:
        """After a restart: the source begins where the resume point says, or, when it cannot
        make its packets again, tells every receiver that what follows is new."""
        start = self.recovery.start_seq(0) if self.recovery is not None else None
        if start is None:
            return
        if slot.node.resume_at(start):
            slot.seq = start
            return
        for each in self.slots.values():
            for sender in each.senders:
                sender.announce(each.seq)

    def _run_inputs(self, reporter: MetricsReporter) -> None:
        """Process what the socket inputs deliver until every one has ended."""
        poller = zmq.Poller()
        by_socket = {}
        for slot in self.slots.values():
            for receiver in slot.receivers:
                poller.register(receiver.sock, zmq.POLLIN)
                by_socket[receiver.sock] = (receiver, slot)
        open_sockets = len(by_socket)
        position = {receiver: index for index, receiver in enumerate(self.inputs)}
        runs = [0] * len(self.inputs)  # messages read back to back per input (max_drained)
        leaving = self.standalone  # a node run alone stops once its inputs are empty
        while open_sockets and not self._abort.is_set():
            self._waiting()
            stopping = leaving and self._stop.is_set()
            ready = dict(poller.poll(0 if stopping else POLL_MS))
            if not ready and stopping:
                break
            for sock in ready:
                receiver, slot = by_socket[sock]
                index = position[receiver]
                taken, ended = self._drain(index, receiver, slot)
                runs[index] += taken
                slot.metrics.max_drained = max(slot.metrics.max_drained, runs[index])
                if taken < DRAIN_MESSAGES:  # it ran dry: the next run starts from nothing
                    runs[index] = 0
                if ended:
                    poller.unregister(sock)
                    del by_socket[sock]
                    open_sockets -= 1
            if self._stop.is_set():
                for sock in [sock for sock, (receiver, _) in by_socket.items()
                             if receiver.watch.silent and sock not in ready]:
                    self._sender_gone(*by_socket.pop(sock))
                    poller.unregister(sock)
                    open_sockets -= 1
            self._report(reporter)

    def _sender_gone(self, receiver, slot: Slot) -> None:
        """The graph is stopping and ``receiver``'s sender has been unheard for its peer timeout
        with nothing left queued: its process is gone (killed, and the supervisor gave up on it),
        so the end of stream it owes will never come. The input counts as ended, so this worker
        and everything downstream finish, flush and close instead of waiting to be killed."""
        log.warning("%s: the graph is stopping and it is silent; its input counts as ended",
                    receiver.watch.what)
        receiver.ended = True
        self._input_ended(slot)

    def _drain(self, index: int, receiver, slot: Slot) -> tuple[int, bool]:
        """Handle up to ``DRAIN_MESSAGES`` messages queued on input ``index`` (``receiver``,
        into ``slot``): (messages taken, whether its end of stream came). Fewer were taken when
        the input ran dry."""
        sock = receiver.sock
        for taken in range(DRAIN_MESSAGES):
            if not sock.poll(0, zmq.POLLIN):
                return taken, False
            packets = receiver.receive_message()
            if not packets:
                continue
            # a message has one send time: one transit sample
            slot.metrics.transit_ns.append(time.time_ns() - packets[0].header.sent_ns)
            for packet in packets:
                self._candidate(index, packet.header.seq, packet)
                if packet.is_eos:
                    self._input_ended(slot)
                    if receiver.defer_end:  # once what follows from it has ended
                        receiver.acknowledge_end()
                    return taken + 1, True
                self._process(slot, packet, time.time_ns())
                if self.first_after_restart:
                    self._first_packet_again(packet)
        return DRAIN_MESSAGES, False

    def run(self) -> dict[str, dict]:
        """Run until every node has ended; the final snapshot of each node."""
        reporter = MetricsReporter(self.ctx, self.collector, self.config.graph.metrics_interval_s)
        finals = {}
        try:
            for slot in self.slots.values():
                if not slot.is_source:
                    slot.node.warm_up()  # before joining the links: upstream waits for this worker
            self._open()
            freeze_heap()
            for slot in self.slots.values():
                slot.metrics.start()
            if self.opened is not None:
                self.opened.set()
            try:
                if self.source is not None:
                    self._run_source(reporter)
                else:
                    self._run_inputs(reporter)
            except Aborted as exc:
                self._abandoned(next(s for s in self.slots.values() if s.senders), "packets", exc)
            for slot in self.slots.values():  # aborted, or a standalone stop: end the rest
                if not slot.ended:
                    self._end(slot)
            if self.recovery is not None and not self.failed and not self._abort.is_set():
                self.recovery.ended()
                self.recovery = None
        finally:
            if self._give_up is not None:
                self._give_up.cancel()
            for slot in self.slots.values():
                try:
                    slot.node.close()
                except Exception as exc:  # reported in the final metrics
                    self._fail(slot, "close", exc)
                finals[slot.name] = slot.snapshot(final=True)
                reporter.send(finals[slot.name], final=True)
            reporter.close()
            for slot in self.slots.values():
                for link in slot.senders + slot.receivers:
                    link.close()
            self.guard.stop()
        return finals
