"""Links: one ZeroMQ socket pair per graph edge, in one of two modes.

- ``lossless`` (DEALER -> DEALER, used one way like PUSH/PULL): the sender blocks once ``hwm``
  messages are queued, so nothing is ever dropped; for replay and evaluation. A batching sender
  (``batch=True``, what the runtime uses) holds packets back until ``flush`` or until
  ``BATCH_PACKETS`` packets or ``BATCH_BYTES`` payload bytes are held, and sends them as one
  message: a ZeroMQ message costs the same whatever it holds, on both ends and in their I/O
  threads, as Apache Flink's network buffers and Kafka's producer batches amortise theirs. End of
  stream is
  acknowledged: the receiver answers it with one ``ack`` frame and the sender does not close before
  that answer. (Trap: ZeroMQ's LINGER alone does not prevent loss here: when the sender closes
  while the receiver's queue is full, libzmq drops what the receiving side had not yet queued.)
- ``live`` (XPUB -> SUB): the sender never blocks. A message that finds the queue full, or no
  subscriber at all, is dropped and counted at the sender (``XPUB_NODROP`` makes the full queue
  visible instead of silent; the sender follows the subscriptions XPUB reports);
  receivers find every loss, wherever it happened, from gaps in the sequence numbers. End of
  stream waits for room at the sender and is repeated ``LIVE_EOS_REPEATS`` times, spaced by
  ``LIVE_EOS_SPACING_S``, since a full receiving queue may drop any one copy; receivers ignore
  the duplicates.

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
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import zmq

from pipeline.core import wire
from pipeline.core.packet import Packet
from pipeline.security import secure_receiver

LOSSLESS, LIVE = "lossless", "live"
MODES = (LOSSLESS, LIVE)
POLL_MS = 100  # how often a blocked sender looks at its abort flag

log = logging.getLogger(__name__)


class Aborted(RuntimeError):
    """A blocking send or wait gave up because the graph is being torn down."""


@dataclass
class SendStats:
    packets: int = 0
    events: int = 0
    dropped: int = 0  # live links: messages refused because the queue was full


@dataclass
class ReceiveStats:
    packets: int = 0
    events: int = 0
    gaps: int = 0  # packets missing by sequence number (live links)
    malformed: Counter = field(default_factory=Counter)  # reason -> count


LINGER_MS = 2000  # how long unsent messages may delay closing a socket
ACK = b"ack"
LIVE_EOS_REPEATS = 5
LIVE_EOS_SPACING_S = 0.1
ZERO_COPY_BYTES = 64 * 1024  # payloads at least this large are sent without copying
BATCH_PACKETS = 32  # a batching sender holds back at most this many packets
BATCH_BYTES = 256 * 1024  # or about this many payload bytes


def _configure(sock: zmq.Socket, hwm: int) -> None:
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)


class Sender:
    """Sending end of one edge. ``send`` returns False when a live link dropped the packet;
    ``batch``: a lossless link holds packets back until ``flush`` (module docstring)."""

    def __init__(self, ctx: zmq.Context, address: str, mode: str = LOSSLESS, hwm: int = 64,
                 aborting=lambda: False, batch: bool = False, curve=None):
        if mode not in MODES:
            raise ValueError(f"link mode must be one of {MODES}, got {mode!r}")
        self.address, self.mode, self.aborting = address, mode, aborting
        self.sock = ctx.socket(zmq.DEALER if mode == LOSSLESS else zmq.XPUB)
        _configure(self.sock, hwm)
        if mode == LIVE:
            self.sock.setsockopt(zmq.XPUB_NODROP, 1)
        if curve is not None:
            guard, server, clients, domain = curve
            guard.secure_sender(self.sock, server, clients, domain)
        self.sock.bind(address)
        self.stats = SendStats()
        self.subscribers = 0
        self.batching = batch and mode == LOSSLESS
        self.held: list[list] = []  # frames of the packets held back by a batching sender
        self.held_bytes = 0

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

    def _send_now(self, frames) -> None:
        """Send a message's frames without blocking (zmq.Again when the queue is full).

        Topics and headers are small and copied; a payload goes zero-copy when it is large
        enough for that to pay (ZeroMQ copies small frames anyway).
        """
        self.sock.send(frames[0], zmq.NOBLOCK | zmq.SNDMORE)
        last = len(frames) - 1
        for index in range(1, last + 1):  # later parts of a message never block
            frame = frames[index]
            self.sock.send(frame, 0 if index == last else zmq.SNDMORE,
                           copy=len(frame) < ZERO_COPY_BYTES)

    def _blocking_send(self, frames) -> None:
        while True:
            try:
                self._send_now(frames)
                return
            except zmq.Again:
                if self.aborting():
                    raise Aborted(f"send to {self.address} abandoned") from None
                self.sock.poll(POLL_MS, zmq.POLLOUT)

    def send(self, packet: Packet) -> bool:
        """Send ``packet`` stamped with the current host time; False if a live link dropped it."""
        frames = wire.encode(packet, sent_ns=time.time_ns())
        if packet.is_eos:
            self.flush()
            self._end(frames)
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
        elif self.batching:
            self.held.append(frames)
            self.held_bytes += len(frames[2])
            if len(self.held) >= BATCH_PACKETS or self.held_bytes >= BATCH_BYTES:
                self.flush()
        else:
            self._blocking_send(frames)
        self.stats.packets += 1
        self.stats.events += packet.header.count
        return True

    def flush(self) -> None:
        """Send the packets held back, as one message; blocks while the link is full."""
        if not self.held:
            return
        held, self.held, self.held_bytes = self.held, [], 0
        self._blocking_send(held[0] if len(held) == 1 else wire.batch_frames(held))

    def _end(self, frames) -> None:
        """Deliver end of stream: acknowledged on lossless links, repeated on live ones."""
        if self.mode == LIVE:
            for _ in range(LIVE_EOS_REPEATS):
                self._blocking_send(frames)
                time.sleep(LIVE_EOS_SPACING_S)
            return
        self._blocking_send(frames)
        while True:
            if self.sock.poll(POLL_MS, zmq.POLLIN):
                if self.sock.recv() == ACK:
                    return
            elif self.aborting():
                raise Aborted(f"end of stream on {self.address} not acknowledged")

    def close(self) -> None:
        self.sock.close(linger=0 if self.aborting() else None)


class Receiver:
    """Receiving end of one edge: validated packets, per-reason malformed counts, gap counts.
    ``receive`` returns the packets of a batch one by one; ``queued`` says some are left."""

    def __init__(self, ctx: zmq.Context, address: str, mode: str = LOSSLESS, hwm: int = 64,
                 max_message_bytes: int = -1, curve=None):
        if mode not in MODES:
            raise ValueError(f"link mode must be one of {MODES}, got {mode!r}")
        self.address, self.mode = address, mode
        self.sock = ctx.socket(zmq.DEALER if mode == LOSSLESS else zmq.SUB)
        _configure(self.sock, hwm)
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

    @property
    def queued(self) -> bool:
        return bool(self._queued)

    def receive(self, timeout_ms: int | None = None) -> Packet | None:
        """The next valid packet, or None on timeout or after a malformed message (counted)."""
        if not self._queued:
            if timeout_ms is not None and not self.sock.poll(timeout_ms, zmq.POLLIN):
                return None
            frames = self.sock.recv_multipart(copy=False)
            try:
                self._queued.extend(wire.decode_message(frames))
            except wire.Malformed as exc:
                self.stats.malformed[exc.reason] += 1
                log.warning("malformed message on %s dropped: %s", self.address, exc)
                return None
        packet = self._queued.popleft()
        if packet.is_eos:
            if self.ended:
                return None  # a repeated end of stream (live links)
            if self.mode == LOSSLESS:
                self.sock.send(ACK, zmq.NOBLOCK)
        self._track(packet)
        return packet

    def _track(self, packet: Packet) -> None:
        header = packet.header
        expected = self._next_seq.get(header.stream, 0)
        if header.seq > expected:
            self.stats.gaps += header.seq - expected
        self._next_seq[header.stream] = max(expected, header.seq + 1)
        if packet.is_eos:
            self.ended = True
        else:
            self.stats.packets += 1
            self.stats.events += header.count

    def close(self) -> None:
        self.sock.close()
