"""ROS 2 links with rclpy: events as ``event_camera_msgs/EventPacket``, decisions as
``evpipe_msgs/Decision`` (``sensors.ros_msgs``), and an EventPacket subscription as a source.

Each ``RosNode`` has an rclpy context, node and executor of its own, initialised without signal
handlers (the runtime owns SIGINT), so several can live in one process. The domain comes from
``domain_id`` or, when it is -1, from ``ROS_DOMAIN_ID``; discovery follows the usual variables
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` keeps it on this host). Needs the ``ros2`` extra:
without it ``RosUnavailable`` names the extra.

Quality of service (``qos``): ``reliable`` (lost samples are sent again while they are among
the publisher's last ``depth``) or ``best_effort`` (never resent), ``depth`` messages of history
kept per publisher and subscription (KEEP_LAST: the publisher never waits, a subscriber that
falls more than ``depth`` messages behind misses the oldest, which ``seq`` shows), and
``volatile`` or ``transient_local`` durability (the publisher keeps its last ``depth`` messages
for subscribers that join late).
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Iterator

import numpy as np

from pipeline.core.packet import Packet, Packetizer, events_packet
from pipeline.core.stage import Source
from sensors.event_packets import PacketDecoder, PacketEncoder
from sensors.readers import FormatError
from sensors.ros_msgs import DECISION, EVENT_PACKET, RosUnavailable, load

log = logging.getLogger(__name__)

RELIABILITY = ("reliable", "best_effort")
DURABILITY = ("volatile", "transient_local")
SPIN_S = 0.05  # longest wait for a message in one spin, s (so stop() is honoured quickly)


def stamp(message_header, ns: int) -> None:
    """Set a ``std_msgs/Header`` stamp from host time ``ns`` (ns since the epoch)."""
    message_header.stamp.sec, message_header.stamp.nanosec = divmod(int(ns), 1_000_000_000)


def stamp_ns(message_header) -> int:
    """The stamp of a ``std_msgs/Header`` in ns."""
    return message_header.stamp.sec * 1_000_000_000 + message_header.stamp.nanosec


class RosNode:
    """An rclpy node named ``name`` in a context of its own; ``close`` shuts both down."""

    def __init__(self, name: str, domain_id: int = -1):
        self.classes = load()  # RosUnavailable without the extra; builds the types once
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = Context()
        rclpy.init(context=self.context, domain_id=None if domain_id < 0 else domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    @staticmethod
    def qos(reliability: str, durability: str, depth: int):
        """An rclpy QoS profile: KEEP_LAST ``depth`` with the named reliability and durability."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        if reliability not in RELIABILITY or durability not in DURABILITY or depth < 1:
            raise ValueError(f"QoS: reliability one of {RELIABILITY}, durability one of "
                             f"{DURABILITY}, depth >= 1; got {reliability!r}, {durability!r}, {depth}")
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
                          else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL
                          if durability == "transient_local" else DurabilityPolicy.VOLATILE)

    def spin(self, timeout_s: float = 0.0) -> None:
        """Run the callbacks that are ready, waiting up to ``timeout_s`` for one."""
        self.executor.spin_once(timeout_sec=timeout_s)

    def wait_for_subscribers(self, publisher, count: int, timeout_s: float) -> bool:
        """Wait until ``publisher`` has ``count`` matched subscriptions; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while publisher.get_subscription_count() < count:
            if time.monotonic() >= deadline:
                return False
            self.spin(0.01)
        return True

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


class EventPublisher:
    """Publishes packets of canonical events as EventPacket messages on ``topic``.

    The encoder starts at the first packet, with its sensor size; ``seq`` counts the messages
    from 0. Header: ``stamp`` is the packet's ``origin_ns`` (when the source obtained the events,
    host time) or the publication time when the packet has none; ``frame_id`` as given.
    """

    def __init__(self, ros: RosNode, topic: str, qos, frame_id: str = ""):
        self.cls = ros.classes[EVENT_PACKET.type_name]
        self.publisher = ros.node.create_publisher(self.cls, topic, qos)
        self.frame_id = frame_id
        self.encoder: PacketEncoder | None = None
        self.published = 0

    def message(self, events: np.ndarray, width: int, height: int, origin_ns: int = 0):
        """The EventPacket of the next packet (``events`` canonical, time-ordered)."""
        if self.encoder is None:
            self.encoder = PacketEncoder(width, height)
        elif (width, height) != (self.encoder.width, self.encoder.height):
            raise ValueError(f"sensor size changed from {self.encoder.width}x{self.encoder.height} "
                             f"to {width}x{height} on one EventPacket topic")
        message = self.cls(**self.encoder.fields(events))  # events as bytes: no per-item check
        message.header.frame_id = self.frame_id
        stamp(message.header, origin_ns or time.time_ns())
        return message

    def publish(self, events: np.ndarray, width: int, height: int, origin_ns: int = 0) -> None:
        self.publisher.publish(self.message(events, width, height, origin_ns))
        self.published += 1


def _integer(value) -> int:
    return -1 if value is None else int(value)


def decision_message(cls, record: dict, seq: int, published_ns: int, origin_ns: int,
                     publish_latency_ns: int | None):
    """An ``evpipe_msgs/Decision`` of a decision record (docs/decisions.md): a null ``class``
    is ``class_id = -1``, other null integers -1, null strings empty; header stamp =
    ``published_ns``."""
    get = record.get
    message = cls(stream=get("stream") or "", segment=_integer(get("segment")),
                  segment_name=get("segment_name") or "", class_id=_integer(get("class")),
                  class_name=get("class_name") or "", score=float(get("score") or 0.0),
                  margin=float(get("margin") or 0.0), rule=get("rule") or "",
                  reason=get("reason") or "", t=_integer(get("t")), t_start=_integer(get("t_start")),
                  events=_integer(get("events")), decoder_ns=_integer(get("decoder_ns")),
                  label=get("label") or "", origin_ns=origin_ns,
                  e2e_latency_ns=published_ns - origin_ns if origin_ns else -1, seq=seq,
                  published_ns=published_ns, publish_latency_ns=_integer(publish_latency_ns))
    stamp(message.header, published_ns)
    return message


class DecisionPublisher:
    """Publishes decision records as ``evpipe_msgs/Decision`` on ``topic``; ``seq`` counts them."""

    def __init__(self, ros: RosNode, topic: str, qos):
        self.cls = ros.classes[DECISION.type_name]
        self.publisher = ros.node.create_publisher(self.cls, topic, qos)
        self.seq = 0

    def publish(self, record: dict, origin_ns: int, sent_ns: int) -> None:
        """Publish one record; ``origin_ns`` and ``sent_ns`` (host ns, 0 when unknown) are those
        of the packet it came in (``publish_latency_ns`` as in docs/decisions.md)."""
        now = time.time_ns()
        latency = record.get("decoder_ns", 0) + now - sent_ns if sent_ns else None
        self.publisher.publish(decision_message(self.cls, record, self.seq, now, origin_ns, latency))
        self.seq += 1


class RosEventSource(Source):
    """Events from an EventPacket topic (``evt3``), e.g. a camera driver's, as packets.

    Messages are decoded as one EVT 3.0 stream (``sensors.event_packets``) and cut by time
    (``packet_us``) or count (``packet_events``); each packet is stamped with the host time at
    which its message arrived (``origin_ns``). ``dropped`` counts the messages missing from the
    ``seq`` numbers; a message that cannot be decoded (another encoding, a bad word) is left
    out, counted in ``rejected`` and logged (the first, then every 1000th), as the links do with
    bad frames: a sender's mistake never stops the graph.
    """

    def __init__(self, name: str, topic: str, qos, node_name: str = "evpipe", domain_id: int = -1,
                 evt3_time: str = "faery", packet_us: int = 1000, packet_events: int = 10_000):
        super().__init__(name)
        self.topic = topic
        self.packet_us, self.packet_events = packet_us, packet_events
        self.decoder = PacketDecoder(f"topic {topic}", evt3_time)
        self.ros = RosNode(node_name, domain_id)
        self.rejected = 0
        self.inbox: collections.deque = collections.deque()
        self.ros.node.create_subscription(self.ros.classes[EVENT_PACKET.type_name], topic,
                                          lambda m: self.inbox.append((time.time_ns(), m)), qos)

    @property
    def dropped(self) -> int:
        return self.decoder.dropped

    def packets(self) -> Iterator[Packet]:
        packetizer = Packetizer(self.packet_us, self.packet_events)
        while not self.stopping:
            if not self.inbox:
                self.ros.spin(SPIN_S)
                continue
            received, m = self.inbox.popleft()
            try:
                chunks = self.decoder.decode(m.width, m.height, m.seq, m.time_base, m.encoding,
                                             m.is_bigendian, m.events)
            except FormatError as exc:
                self.rejected += 1
                if self.rejected % 1000 == 1:
                    log.warning("%s: message left out (%d so far): %s", self.name, self.rejected, exc)
                continue
            cuts = [cut for chunk in chunks for cut in packetizer.push(chunk)] + packetizer.flush()
            for cut in cuts:
                yield events_packet(self.name, 0, cut, m.width, m.height, origin_ns=received)

    def close(self) -> None:
        if self.decoder.dropped:
            log.warning("%s: %d EventPacket message(s) missing from the seq numbers on %s",
                        self.name, self.decoder.dropped, self.topic)
        self.ros.close()

