"""Links: one ZeroMQ socket pair per graph edge, in one of two modes.

- ``lossless`` (DEALER -> DEALER, used one way like PUSH/PULL): the sender blocks once ``hwm``
  messages are queued, so nothing is ever dropped; for replay and evaluation. A batching sender
  (``batch=True``, what the runtime uses) holds packets back until ``flush`` or until
  ``BATCH_PACKETS`` packets or ``BATCH_BYTES`` payload bytes are held, and sends them as one
  message (``wire.encode_batch``: one header, one payload): a ZeroMQ message, a header parse and
  a payload check cost the same whatever they hold, on both ends and in their I/O threads, as
  Apache Flink's network buffers and Kafka's producer batches amortise theirs. End of stream is
  acknowledged: the receiver answers it with one ``end`` frame and the sender does not close before
  that answer. (Trap: ZeroMQ's LINGER alone does not prevent loss here: when the sender closes
  while the receiver's queue is full, libzmq drops what the receiving side had not yet queued.)
- ``live`` (XPUB -> SUB): the sender never blocks. A message that finds the queue full, or no
  subscriber at all, is dropped and counted at the sender (``XPUB_NODROP`` makes the full queue
  visible instead of silent; the sender follows the subscriptions XPUB reports);
  receivers find every loss, wherever it happened, from gaps in the sequence numbers. End of
  stream waits for room at the sender and is repeated ``LIVE_EOS_REPEATS`` times, spaced by
  ``LIVE_EOS_SPACING_S``, since a full receiving queue may drop any one copy; receivers ignore
  the duplicates.

An **exactly-once** lossless link (``exactly_once=True``, the runtime's default) also survives a
restart of either end. Both ends talk back on the same DEALER pair with one-frame control
messages (``tag`` or ``tag value``, ASCII): the receiver opens with ``hello Q`` (it resumes at
sequence number Q: 0 on a fresh start), acknowledges with ``ack Q`` that it will never ask for a
packet before Q again (its resume point, ``pipeline.runtime.recovery``), and answers end of
stream with ``end``. A restarted sender whose packets cannot be made again (a live source)
says ``anew Q`` instead: its next packet is Q, and the receiver takes it as new. The sender keeps every packet from the receiver's resume point on (at most
``resend_packets`` and ``resend_bytes`` of payload; beyond that the oldest go and are counted
as ``overflow``), resends them
when a ``hello`` asks, and the receiver drops every packet whose sequence number it has already
had (counted as ``duplicates``). A receiver that finds packets missing (a connection dropped
with messages in its queues: ZeroMQ discards them) asks for them again with ``hello``, and
drops what comes before them. So each packet is delivered once and in order, whichever end
restarts, in the manner of upstream backup (Hwang et al., "High-availability algorithms for
distributed stream processing", ICDE 2005).

**Heartbeats.** An end that has sent nothing for ``heartbeat_s`` sends ``beat``; an end that has
heard nothing from its peer for ``peer_timeout_s`` logs it once and counts it (``silences``),
and logs again when the peer is back. On tcp links ZeroMQ's own ZMTP heartbeats
(``ZMQ_HEARTBEAT_IVL``, ``ZMQ_HEARTBEAT_TIMEOUT``) also drop a connection to a peer that stopped
answering, so a peer that returns reconnects. Live links carry heartbeats from sender to
receiver only. While the graph stops, a peer unheard for ``peer_timeout_s`` is taken as gone
(``Sender``, ``pipeline.runtime.worker``). An end of a lossless link that closes without
finishing the stream (a graph stop, a stage run alone that is stopped) says ``bye``: its peer
takes it as silent at once, so a stop spreads through a chain of processes in one peer timeout
rather than one per process.

The sending side binds and the receiving side connects, so a stage can be restarted, or moved to
another host, without touching its upstream. Addresses are ``inproc://``, ``ipc://`` or
``tcp://``. Every queue is bounded by ``hwm`` messages on both sides, and a receiver takes no
message larger than ``max_message_bytes`` (``ZMQ_MAXMSGSIZE``: the peer is disconnected before
anything is allocated). A link may be encrypted and authenticated with CURVE
(``pipeline.security``): the sender is given ``curve`` = (guard, server certificate,
folder of allowed clients, ZAP domain), the receiver ``curve`` = (server certificate, client
certificate).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import zmq

from pipeline.core import wire
from pipeline.core.packet import Packet
from pipeline.security import secure_receiver

LOSSLESS, LIVE = "lossless", "live"
MODES = (LOSSLESS, LIVE)
# the ZeroMQ endpoints a link binds and connects to (zmq_tcp(7), zmq_ipc(7), zmq_inproc(7))
ENDPOINT = re.compile(r"tcp://(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5})|ipc://\S+|inproc://\S+")
POLL_MS = 100  # how often a blocked sender looks at its abort flag

log = logging.getLogger(__name__)


def endpoint_problem(address: str) -> str:
    """Why ``address`` is not an endpoint a link can bind and connect to, or "" when it is."""
    match = ENDPOINT.fullmatch(address)
    if match is None:
        return f"expected tcp://HOST:PORT, ipc://PATH or inproc://NAME, got {address!r}"
    if match.group(1) is not None and not 1 <= int(match.group(1)) <= 65535:
        return f"a tcp port is 1 to 65535, got {match.group(1)} in {address!r}"
    return ""


class Aborted(RuntimeError):
    """A blocking send or wait gave up because the graph is being torn down."""


class ReceiverGone(Aborted):
    """A blocking send or wait gave up during a stop because the receiving end has been unheard
    for its peer timeout: what it waited to deliver is lost."""


@dataclass
class SendStats:
    packets: int = 0
    events: int = 0
    dropped: int = 0  # live links: messages refused because the queue was full
    resent: int = 0  # exactly-once links: packets sent again to a restarted receiver
    overflow: int = 0  # exactly-once links: packets the resend buffer had to let go
    silences: int = 0  # times the receiving end went unheard for peer_timeout_s


@dataclass
class ReceiveStats:
    packets: int = 0
    events: int = 0
    gaps: int = 0  # packets missing by sequence number (live links)
    duplicates: int = 0  # exactly-once links: packets already received, dropped
    silences: int = 0  # times the sending end went unheard for peer_timeout_s
    malformed: Counter = field(default_factory=Counter)  # reason -> count


LINGER_MS = 2000  # how long unsent messages may delay closing a socket
RECEIVER_LINGER_MS = 200  # ... a receiving end's, which sends control messages only
HELLO, RESUMED, ENDED, BEAT, ANEW, LEFT = (b"hello", b"ack", b"end", b"beat", b"anew",
                                       b"bye")  # control messages
LIVE_EOS_REPEATS = 5
LIVE_EOS_SPACING_S = 0.1
ZERO_COPY_BYTES = 64 * 1024  # payloads at least this large are sent without copying
BATCH_PACKETS = 128  # a batching sender holds back at most this many packets
BATCH_BYTES = 2**20  # or about this many payload bytes


def _configure(sock: zmq.Socket, address: str, hwm: int, heartbeat_s: float,
               peer_timeout_s: float) -> None:
    """Linger, queue bounds and, on tcp links only, ZMTP heartbeats. An ipc or inproc peer that
    dies closes its end of the connection at once, so they would add nothing there, and libzmq
    4.3 can abort the process (assertion ``!_io_error`` in stream_engine_base.cpp) when a ZMTP
    heartbeat falls on a connection whose peer was killed."""
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if address.startswith("tcp://"):
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(heartbeat_s * 1e3))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(peer_timeout_s * 1e3))


def control_message(tag: bytes, value: int | None = None) -> bytes:
    return tag if value is None else tag + b" %d" % value


def parse_control(message: bytes) -> tuple[bytes, int | None]:
    """(tag, value) of a control message; ValueError when it is none."""
    tag, _, value = message.partition(b" ")
    if tag not in (HELLO, RESUMED, ENDED, BEAT, ANEW, LEFT) or (value and not value.isdigit()):
        raise ValueError(f"not a control message: {message[:40]!r}")
    return tag, int(value) if value else None


class PeerWatch:
    """When this end last sent and last heard anything (monotonic s), and whether its peer is
    currently reported silent (module docstring, Heartbeats)."""

    def __init__(self, heartbeat_s: float, peer_timeout_s: float, what: str):
        self.heartbeat_s, self.peer_timeout_s, self.what = heartbeat_s, peer_timeout_s, what
        self.last_sent = self.last_heard = time.monotonic()
        self.silent = False

    def heard(self) -> None:
        self.last_heard = time.monotonic()
        if self.silent:
            self.silent = False
            log.info("%s is heard again", self.what)

    def due(self, now: float) -> bool:
        """Whether this end should send a heartbeat now."""
        return now - self.last_sent >= self.heartbeat_s

    def left(self) -> None:
        """The peer said ``bye``: it closed without finishing the stream. It counts as silent
        now rather than after ``peer_timeout_s``; anything it sends later is heard again."""
        if not self.silent:
            self.silent = True
            log.info("%s: it left", self.what)

    def fell_silent(self, now: float) -> bool:
        """True once when the peer has been unheard for ``peer_timeout_s`` (logged)."""
        if self.silent or now - self.last_heard < self.peer_timeout_s:
            return False
        self.silent = True
        log.warning("%s: nothing heard for %.1f s", self.what, now - self.last_heard)
        return True


def batchable(packet: Packet) -> bool:
    """Whether ``packet`` may wait for others to share a message: a small data packet of
    records (a large one goes alone, without copying, and costs its message once anyway)."""
    return wire.batchable(packet) and packet.records.nbytes < ZERO_COPY_BYTES


def full(count: int, size: int) -> bool:
    """Whether a batch of ``count`` packets and ``size`` payload bytes may take no more."""
    return count >= BATCH_PACKETS or size >= BATCH_BYTES


def messages(packets: list[Packet], sent_ns: int) -> list[list]:
    """The frames of the messages that carry ``packets`` (consecutive, of one stream) in order:
    runs of ``batchable`` packets that may share a batch, at most ``BATCH_PACKETS`` or about
    ``BATCH_BYTES`` each, as batches; the rest alone."""
    out, run, size = [], [], 0

    def close_run():
        if run:
            out.append(wire.encode(run[0], sent_ns) if len(run) == 1
                       else wire.encode_batch(run, sent_ns))
        run.clear()

    for packet in packets:
        if not batchable(packet):
            close_run()
            out.append(wire.encode(packet, sent_ns))
            continue
        if run and (not wire.same_batch(run[0].header, packet.header) or full(len(run), size)):
            close_run()
        if not run:
            size = 0
        run.append(packet)
        size += packet.records.nbytes
    close_run()
    return out


class Sender:
    """Sending end of one edge. ``send`` returns False when a live link dropped the packet;
    ``batch``: a lossless link holds packets back until ``flush`` (module docstring).
    A blocked send or an unacknowledged end of stream gives up (``Aborted``) when ``aborting()``
    says so, or when ``stopping()`` does and the receiving end has been unheard for
    ``peer_timeout_s``: its process is gone, and nothing will take what waits for it."""

    def __init__(self, ctx: zmq.Context, address: str, mode: str = LOSSLESS, hwm: int = 64,
                 aborting=lambda: False, batch: bool = False, curve=None,
                 exactly_once: bool = False, resend_packets: int = 65536,
                 resend_bytes: int = 256 * 2**20,
                 heartbeat_s: float = 1.0, peer_timeout_s: float = 5.0, stopping=lambda: False):
        if mode not in MODES:
            raise ValueError(f"link mode must be one of {MODES}, got {mode!r}")
        self.address, self.mode, self.aborting, self.stopping = address, mode, aborting, stopping
        self.sock = ctx.socket(zmq.DEALER if mode == LOSSLESS else zmq.XPUB)
        _configure(self.sock, address, hwm, heartbeat_s, peer_timeout_s)
        self.sock.copy_threshold = ZERO_COPY_BYTES  # smaller frames are copied (pyzmq)
        if mode == LIVE:
            self.sock.setsockopt(zmq.XPUB_NODROP, 1)
        if curve is not None:
            guard, server, clients, domain = curve
            guard.secure_sender(self.sock, server, clients, domain)
        try:
            self.sock.bind(address)
        except zmq.ZMQError:  # in use, or not bindable here: leave no socket to block ctx.term()
            self.sock.close(linger=0)
            raise
        self.stats = SendStats()
        self.subscribers = 0
        self.batching = batch and mode == LOSSLESS
        self.held: list[Packet] = []  # the packets held back by a batching sender
        self.held_bytes = 0
        self.exactly_once = exactly_once and mode == LOSSLESS
        self.resend_packets, self.resend_bytes = resend_packets, resend_bytes
        self.backlog_bytes = 0
        # exactly-once: (packet, its payload bytes) of every packet from the receiver's resume
        # point on, the last seq handed to ZeroMQ, and that resume point
        self.backlog: deque[tuple[Packet, int]] = deque()
        self.sent_seq = -1
        self.acked = 0
        self.end_acknowledged = False
        self.watch = PeerWatch(heartbeat_s, peer_timeout_s, f"receiving end of {address}")

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """Live links: wait until a receiver has subscribed (avoids losing the first packets)."""
        if self.mode != LIVE:
            return True
        deadline = time.monotonic() + timeout_s
        self._follow_subscriptions()
        while self.subscribers == 0 and time.monotonic() < deadline and not self.aborting():
            self.sock.poll(min(POLL_MS, max(int((deadline - time.monotonic()) * 1e3), 1)), zmq.POLLIN)
            self._follow_subscriptions()
        return self.subscribers > 0

    def _follow_subscriptions(self) -> None:
        """Count the subscriptions (1) and unsubscriptions (0) XPUB has passed up since."""
        while self.sock.poll(0, zmq.POLLIN):
            message = self.sock.recv()
            if message[:1] == b"\x01":
                self.subscribers += 1
            elif message[:1] == b"\x00":
                self.subscribers = max(self.subscribers - 1, 0)

    def control(self) -> None:
        """Read what the receiving end said: subscriptions (live), or the control messages of
        a lossless link (module docstring)."""
        if self.mode == LIVE:
            self._follow_subscriptions()
            return
        while self.sock.poll(0, zmq.POLLIN):
            message = self.sock.recv()
            try:
                tag, value = parse_control(message)
            except ValueError as exc:
                log.warning("%s: %s", self.address, exc)
                continue
            if tag == LEFT:
                self.watch.left()
                continue
            self.watch.heard()
            if tag == ENDED:
                self.end_acknowledged = True
            elif tag == RESUMED and self.exactly_once:
                self._trim(value)
            elif tag == HELLO and self.exactly_once:
                self._trim(value)
                self._resend(value)

    def _trim(self, resume_seq: int) -> None:
        """The receiver will not ask for a packet before ``resume_seq`` again: let them go."""
        self.acked = max(self.acked, resume_seq)
        while self.backlog and self.backlog[0][0].header.seq < self.acked:
            self.backlog_bytes -= self.backlog.popleft()[1]

    def _resend(self, resume_seq: int) -> None:
        """A receiver (re)started at ``resume_seq``: send again what it may not have had."""
        again = [packet for packet, _ in self.backlog
                 if resume_seq <= packet.header.seq <= self.sent_seq]
        if not again:
            if resume_seq <= self.sent_seq:  # all of it gone from the buffer
                log.error("%s: the receiver resumes at packet %d, no longer in the resend "
                          "buffer: packets %d-%d are lost", self.address, resume_seq, resume_seq,
                          self.sent_seq)
                self._blocking_send([control_message(ANEW, self.sent_seq + 1)])
            return
        first = again[0].header.seq
        if first > resume_seq:
            log.error("%s: the receiver resumes at packet %d but the resend buffer starts at %d "
                      "(resend_packets or resend_bytes too small): packets %d-%d are lost",
                      self.address, resume_seq, first, resume_seq, first - 1)
            self._blocking_send([control_message(ANEW, first)])
        log.info("%s: a receiver resumed at packet %d; sending %d packets again", self.address,
                 resume_seq, len(again))
        for frames in messages(again, time.time_ns()):
            self._blocking_send(frames)
        self.stats.resent += len(again)

    def _keep(self, packet: Packet, size: int) -> None:
        """Exactly-once: hold ``packet`` (``size`` payload bytes) for a receiver that may
        restart."""
        self.backlog.append((packet, size))
        self.backlog_bytes += size
        while len(self.backlog) > self.resend_packets or self.backlog_bytes > self.resend_bytes:
            self.backlog_bytes -= self.backlog.popleft()[1]
            if not self.stats.overflow:
                log.warning("%s: more than resend_packets = %d packets or resend_bytes = %d "
                            "bytes since the receiver's resume point; a receiver restarted now "
                            "would miss the oldest", self.address, self.resend_packets,
                            self.resend_bytes)
            self.stats.overflow += 1

    def announce(self, seq: int) -> None:
        """Exactly-once, after a restart that cannot make its packets again: the next packet
        is ``seq``, and the receiver is to take it as new."""
        if self.exactly_once:
            self._blocking_send([control_message(ANEW, seq)])

    def beat(self, now: float) -> None:
        """Heartbeat when idle; report a receiving end unheard for ``peer_timeout_s`` (lossless:
        it answers; live links cannot hear their subscribers)."""
        self.control()  # what the receiving end said meanwhile, heartbeats included
        if self.watch.due(now) and (self.mode == LOSSLESS or self.subscribers):
            try:
                self.sock.send(BEAT, zmq.NOBLOCK)
                self.watch.last_sent = now
            except zmq.Again:
                pass  # no receiver connected, or its queue is full: it has news enough
        if self.mode == LOSSLESS and self.watch.fell_silent(now):
            self.stats.silences += 1

    def _send_now(self, frames) -> None:
        """Send a message's frames without blocking (zmq.Again when the queue is full: ZeroMQ
        counts whole messages against the high-water mark, so once the first frame is taken the
        others are too).

        Topics and headers are small and copied; a payload goes zero-copy when it is at least
        ``ZERO_COPY_BYTES`` (the socket's ``copy_threshold``: pyzmq copies smaller frames
        anyway).
        """
        self.sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        self.watch.last_sent = time.monotonic()

    def _blocking_send(self, frames) -> None:
        while True:
            try:
                self._send_now(frames)
                return
            except zmq.Again:
                if self.aborting():
                    raise Aborted(f"send to {self.address} abandoned") from None
                if self._receiver_gone():
                    raise ReceiverGone(self._gone_message()) from None
                self.sock.poll(POLL_MS, zmq.POLLOUT)

    def _receiver_gone(self) -> bool:
        """Stopping, and the lossless receiving end unheard for ``peer_timeout_s`` (``beat``
        reads what it said meanwhile)."""
        if self.mode != LOSSLESS or not self.stopping():
            return False
        self.beat(time.monotonic())
        return self.watch.silent

    def _gone_message(self) -> str:
        return (f"its receiving end {self.address} unheard for "
                f"{time.monotonic() - self.watch.last_heard:.1f} s, the graph stopping")

    def send(self, packet: Packet) -> bool:
        """Send ``packet`` stamped with the current host time (a batch: the time it leaves);
        False if a live link dropped it."""
        if self.batching and batchable(packet):
            if self.held and not wire.same_batch(self.held[0].header, packet.header):
                self.flush()
            size = packet.records.nbytes
            if self.exactly_once:
                self._keep(packet, size)
            self.held.append(packet)
            self.held_bytes += size
            if full(len(self.held), self.held_bytes):
                self.flush()
            self.stats.packets += 1
            self.stats.events += packet.header.count
            return True
        self.flush()  # what is held goes first: packets leave in order
        frames = wire.encode(packet, sent_ns=time.time_ns())
        if self.exactly_once:
            self._keep(packet, len(frames[2]))
        if packet.is_eos:
            self._end(frames, packet.header.seq)
            return True
        if self.mode == LIVE:
            self._follow_subscriptions()
            if not self.subscribers:  # nobody receives it: a loss like a full queue
                self.stats.dropped += 1
                return False
            try:
                self._send_now(frames)
            except zmq.Again:
                self.stats.dropped += 1
                return False
        else:
            self._blocking_send(frames)
            self.sent_seq = packet.header.seq
        self.stats.packets += 1
        self.stats.events += packet.header.count
        return True

    def flush(self) -> None:
        """Send the packets held back, as one message; blocks while the link is full."""
        if not self.held:
            return
        held, self.held, self.held_bytes = self.held, [], 0
        # one message: ``send`` holds one run of packets that may share a batch, within the limits
        self._blocking_send(wire.encode(held[0], time.time_ns()) if len(held) == 1
                            else wire.encode_batch(held, time.time_ns()))
        self.sent_seq = held[-1].header.seq
        if self.exactly_once:
            self.control()

    def _end(self, frames, seq: int) -> None:
        """Deliver end of stream: acknowledged on lossless links, repeated on live ones."""
        if self.mode == LIVE:
            for _ in range(LIVE_EOS_REPEATS):
                self._blocking_send(frames)
                time.sleep(LIVE_EOS_SPACING_S)
            return
        self._blocking_send(frames)
        self.sent_seq = seq
        while not self.end_acknowledged:
            if self.sock.poll(POLL_MS, zmq.POLLIN):
                self.control()  # a receiver that restarts meanwhile is sent the rest again
            elif self.aborting():
                raise Aborted(f"end of stream on {self.address} not acknowledged")
            elif self._receiver_gone():
                raise ReceiverGone(self._gone_message())

    def close(self) -> None:
        """Close; a lossless end whose end of stream was not acknowledged says ``bye`` first,
        so its receiver need not wait ``peer_timeout_s`` to learn it is gone (best effort:
        behind a full queue it is not sent, and the peer timeout still tells)."""
        if self.mode == LOSSLESS and not self.end_acknowledged:
            try:
                self.sock.send(LEFT, zmq.NOBLOCK)
            except zmq.Again:
                pass
        self.sock.close(linger=0 if self.aborting() else None)


class Receiver:
    """Receiving end of one edge: validated packets, per-reason malformed counts, gap counts.
    ``receive`` returns the packets of a batch one by one, ``receive_message`` all at once.
    ``resume_seq``: exactly-once links after a restart, the sequence number this end resumes at
    (its ``hello``); None on a fresh start.
    ``defer_end``: the caller acknowledges end of stream itself (``acknowledge_end``)."""

    def __init__(self, ctx: zmq.Context, address: str, mode: str = LOSSLESS, hwm: int = 64,
                 max_message_bytes: int = -1, curve=None, exactly_once: bool = False,
                 resume_seq: int | None = None, heartbeat_s: float = 1.0, peer_timeout_s: float = 5.0,
                 defer_end: bool = False):
        if mode not in MODES:
            raise ValueError(f"link mode must be one of {MODES}, got {mode!r}")
        self.address, self.mode = address, mode
        self.sock = ctx.socket(zmq.DEALER if mode == LOSSLESS else zmq.SUB)
        _configure(self.sock, address, hwm, heartbeat_s, peer_timeout_s)
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        if curve is not None:
            secure_receiver(self.sock, *curve)
        if mode == LIVE:
            self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(address)
        self.stats = ReceiveStats()
        self._next_seq: dict[str, int] = {}
        self._queued: deque[Packet] = deque()  # the rest of a received batch
        self.ended = False
        self.defer_end = defer_end
        self.exactly_once = exactly_once and mode == LOSSLESS
        self.expected = resume_seq or 0  # exactly-once: the next sequence number to take
        # after a restart, until the resent packets begin: what the sender sent before it read
        # the hello comes first and is dropped (the resend holds it too)
        self.resuming = resume_seq is not None
        self.watch = PeerWatch(heartbeat_s, peer_timeout_s, f"sending end of {address}")
        if self.exactly_once and resume_seq is not None:
            self._say(HELLO, resume_seq)  # queued until the connection is up

    def _say(self, tag: bytes, value: int | None = None) -> None:
        """Send a control message upstream, unless the queue towards it is full (a later one
        says as much)."""
        try:
            self.sock.send(control_message(tag, value), zmq.NOBLOCK)
            self.watch.last_sent = time.monotonic()
        except zmq.Again:
            pass

    def resumed(self, seq: int) -> None:
        """Exactly-once: this end will never again ask for a packet before ``seq``."""
        if not self.ended:
            self._say(RESUMED, seq)

    def beat(self, now: float) -> None:
        """Heartbeat upstream when idle (lossless links); report a silent sending end."""
        if self.ended:
            return  # the sender may be gone: nothing is owed to it any more
        if self.mode == LOSSLESS and self.watch.due(now):
            self._say(BEAT)
        if self.watch.fell_silent(now):
            self.stats.silences += 1

    def receive(self, timeout_ms: int | None = None) -> Packet | None:
        """The next valid packet, or None on timeout, after a control message, a duplicate or
        a malformed message (counted)."""
        if not self._queued:
            if timeout_ms is not None and not self.sock.poll(timeout_ms, zmq.POLLIN):
                return None
            self._queued.extend(self.receive_message())
            if not self._queued:
                return None
        return self._queued.popleft()

    def receive_message(self) -> list[Packet]:
        """The valid packets of the next message, in order (blocks until one arrives): a batch's
        or one packet, or none after a control message, duplicates only or a malformed message
        (counted). What ``receive`` hands out one by one, for a caller that takes a whole
        message at a time (the worker)."""
        frames = self.sock.recv_multipart(copy=False)
        self.watch.heard()
        try:
            if len(frames) == 1:
                self._control(frames[0].bytes)
                return []
            packets = self._accepted(wire.decode_message(frames))
        except wire.Malformed as exc:
            self.stats.malformed[exc.reason] += 1
            log.warning("malformed message on %s dropped: %s", self.address, exc)
            return []
        if len(packets) == 1 and packets[0].is_eos and not self.defer_end:
            self.acknowledge_end()  # end of stream travels alone
        return packets

    def acknowledge_end(self) -> None:
        """Lossless links: tell the sender its end of stream is through, so it may close. The
        runtime says so once everything that follows from it has ended downstream, so a
        receiver that restarts before then still finds its sender."""
        if self.mode == LOSSLESS:
            self._say(ENDED)

    def _control(self, message: bytes) -> None:
        """A one-frame message: a heartbeat, a leaving sender's ``bye``, or a restarted
        sender's ``anew``; anything else is malformed."""
        try:
            tag, value = parse_control(message)
        except ValueError:
            tag = value = None
        if tag == LEFT:
            self.watch.left()
        elif tag == ANEW and self.exactly_once:
            log.info("%s: the sending end restarted or lost packets %d-%d; its packets from %d "
                     "on are new", self.address, self.expected, value - 1, value)
            self.stats.gaps += max(value - self.expected, 0)
            self.expected = value
            self.resuming = False
        elif tag != BEAT:
            raise wire.Malformed("frame_count", f"expected 3 frames or a heartbeat, got "
                                                f"{message[:40]!r}")

    def _accepted(self, packets: list[Packet]) -> list[Packet]:
        """The packets of one message to deliver, counted: a batch's consecutive sequence
        numbers are checked at once, a single packet by ``_track``."""
        if len(packets) == 1:
            return packets if self._track(packets[0]) else []
        first, n = packets[0].header.seq, len(packets)
        if self.exactly_once:
            skip = self.expected - first  # packets of the batch before the next one expected
            if skip < 0 and not self.resuming:
                self._missing(first)
            accepted = packets[skip:] if 0 <= skip < n else []
            if accepted:
                self.resuming = False
                self.expected = first + n
            self.stats.duplicates += n - len(accepted)
        else:
            stream = packets[0].header.stream
            expected = self._next_seq.get(stream, 0)
            self.stats.gaps += max(first - expected, 0)
            self._next_seq[stream] = max(expected, first + n)
            accepted = packets
        self.stats.packets += len(accepted)
        self.stats.events += sum([packet.header.count for packet in accepted])
        return accepted

    def _missing(self, seq: int) -> None:
        """Exactly-once: packets before ``seq`` were lost in a dropped connection: ask for them
        again, dropping what comes before them."""
        log.info("%s: packets %d-%d missing (a connection dropped); asking for them again",
                 self.address, self.expected, seq - 1)
        self._say(HELLO, self.expected)
        self.resuming = True

    def _track(self, packet: Packet) -> bool:
        """Count the packet; False for a duplicate (exactly-once) or a repeated end of stream."""
        header = packet.header
        if self.exactly_once:
            if header.seq < self.expected or (self.resuming and header.seq > self.expected):
                self.stats.duplicates += 1
                return False
            if header.seq > self.expected:  # lost in a dropped connection
                self._missing(header.seq)
                self.stats.duplicates += 1
                return False
            self.resuming = False
            self.expected = header.seq + 1
        else:
            if packet.is_eos and self.ended:
                return False  # a repeated end of stream (live links)
            expected = self._next_seq.get(header.stream, 0)
            if header.seq > expected:
                self.stats.gaps += header.seq - expected
            self._next_seq[header.stream] = max(expected, header.seq + 1)
        if packet.is_eos:
            self.ended = True
        else:
            self.stats.packets += 1
            self.stats.events += header.count
        return True

    def close(self) -> None:
        """Close, giving what this end still sends (its control messages: the last ``end``, or
        ``bye`` on a lossless link whose end of stream never came) ``RECEIVER_LINGER_MS`` to
        leave; a sender that has gone would otherwise hold the close for the whole linger."""
        if self.mode == LOSSLESS and not self.ended:
            self._say(LEFT)
        self.sock.close(linger=RECEIVER_LINGER_MS)
