"""ROS 2 node types: "ros2" (sink: events and decisions out), "ros2_source" (events in),
"rosbag" (sink: events into an MCAP rosbag2 file); docs/ros2.md.

Events travel as ``event_camera_msgs/EventPacket`` with ``encoding = "evt3"``, decisions as
``evpipe_msgs/Decision`` (``sensors.ros_msgs``). These types need the ``ros2`` extra (rclpy,
the rosidl generators, rosbags): without it the config loader rejects them with an error that
names the extra, before anything runs.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Literal

from pipeline.core.nodetype import (
    EVENTS,
    JSON,
    SINK,
    SOURCE,
    ParamError,
    Params,
    node_type,
    param,
    path_field,
)
from pipeline.core.packet import Packet
from pipeline.core.stage import Sink
from pipeline.nodes.basic import PacketParams
from pipeline.nodes.sinks import _event_records
from sensors.ros2 import DecisionPublisher, EventPublisher, RosEventSource, RosNode
from sensors.rosbag import DEFAULT_TOPIC, RosbagWriter

log = logging.getLogger(__name__)

EXTRA = "pip install -e '.[ros2]'"
Reliability = Literal["reliable", "best_effort"]
Durability = Literal["volatile", "transient_local"]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def check_extra(key: str, modules: tuple[str, ...]) -> None:
    """ParamError on ``key`` naming the ``ros2`` extra when one of ``modules`` is missing."""
    missing = [name for name in modules if not _installed(name)]
    if missing:
        raise ParamError(key, f"needs the 'ros2' extra ({', '.join(missing)} not installed): {EXTRA}")


def check_name(key: str, name: str) -> None:
    if not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise ParamError(key, f"expected a ROS 2 node name (letters, digits, underscores, not "
                              f"starting with a digit), got {name!r}")


def check_topic(key: str, topic: str) -> None:
    if not topic.startswith("/") or " " in topic or topic.endswith("/"):
        raise ParamError(key, f"expected a ROS 2 topic name like /events, got {topic!r}")


@dataclass(frozen=True)
class QosParams(Params):
    """A ROS 2 node (``node_name``, ``domain_id``) and the quality of service of its topics:
    ``reliability``, ``durability`` and ``depth`` (KEEP_LAST history)."""

    reliability: Reliability = param("reliable", "reliable: lost samples are resent while they are "
                                                 "among the publisher's last `depth`; best_effort: "
                                                 "never resent")
    durability: Durability = param("volatile", "transient_local: the publisher keeps its last "
                                               "`depth` messages for subscribers that join late")
    depth: int = param(100, "messages kept per publisher and subscription (KEEP_LAST history)",
                       unit="messages", ge=1, le=10_000)
    node_name: str = param("evpipe", "ROS 2 node name (letters, digits, underscores)")
    domain_id: int = param(-1, "ROS 2 domain; -1: from ROS_DOMAIN_ID (0 when unset)", ge=-1, le=232)

    def check(self):
        check_name("node_name", self.node_name)

    def qos(self):
        return RosNode.qos(self.reliability, self.durability, self.depth)


@dataclass(frozen=True)
class Ros2SinkParams(QosParams):
    """The ros2 sink publishes event packets as event_camera_msgs/EventPacket (evt3) on
    ``events_topic`` and decision records as evpipe_msgs/Decision on ``decisions_topic``."""

    accepts = (EVENTS, JSON)

    events_topic: str = param("/events", "topic of the EventPacket messages")
    decisions_topic: str = param("/decisions", "topic of the Decision messages")
    frame_id: str = param("", "frame_id of every message header")
    wait_s: float = param(0.0, "before the first message, wait up to this long for a subscriber "
                               "on its topic", unit="s", ge=0, le=600)

    def check(self):
        super().check()
        check_topic("events_topic", self.events_topic)
        check_topic("decisions_topic", self.decisions_topic)

    def check_files(self):
        check_extra("events_topic", ("rclpy", "rosidl_generator_py", "rosbags"))


@node_type("ros2", SINK, Ros2SinkParams)
class Ros2Sink(Sink):
    """Publishes events (event_camera_msgs/EventPacket, evt3) and decisions (evpipe_msgs/Decision)
    on ROS 2 topics.

    EventPacket: one message per packet, ``seq`` +1 per message (a subscriber sees drops),
    ``header.stamp`` the packet's ``origin_ns`` (when the source obtained the events, host time),
    ``time_base`` as in ``sensors.event_packets``. Decision: one message per record, fields as
    docs/decisions.md (nulls as -1 or empty), ``seq`` +1 per decision, ``header.stamp`` =
    ``published_ns``. Publishers are made for the kinds of records that arrive.
    """

    def __init__(self, name: str, params: Ros2SinkParams):
        super().__init__(name)
        self.params = params
        self.ros = RosNode(params.node_name, params.domain_id)
        qos = params.qos()
        self.events = EventPublisher(self.ros, params.events_topic, qos, params.frame_id)
        self.decisions = DecisionPublisher(self.ros, params.decisions_topic, qos)
        self.waited: set[str] = set()

    def _wait(self, topic: str, publisher) -> None:
        if topic in self.waited or not self.params.wait_s:
            return
        self.waited.add(topic)
        if not self.ros.wait_for_subscribers(publisher, 1, self.params.wait_s):
            log.warning("%s: no subscriber on %s after %.1f s; publishing anyway", self.name, topic,
                        self.params.wait_s)

    def consume(self, packet: Packet) -> None:
        header = packet.header
        if header.dtype == JSON:
            self._wait(self.params.decisions_topic, self.decisions.publisher)
            for record in packet.records:
                if isinstance(record, dict) and "class" in record:
                    self.decisions.publish(record, header.origin_ns, header.sent_ns)
            return
        events = _event_records(self.name, packet)
        if len(events):
            self._wait(self.params.events_topic, self.events.publisher)
            self.events.publish(events, header.width, header.height, header.origin_ns)

    def close(self) -> None:
        encoder = self.events.encoder
        if encoder is not None and encoder.clamped:
            log.warning("%s: %d event(s) earlier than the one before them were sent at its time "
                        "(EVT 3.0 cannot go back)", self.name, encoder.clamped)
        self.ros.close()


@dataclass(frozen=True)
class Ros2SourceParams(QosParams, PacketParams):
    """The ros2_source subscribes to the event_camera_msgs/EventPacket topic ``topic`` (evt3,
    e.g. a camera driver's) and cuts its events into packets of ``packet_us`` sensor time or
    ``packet_events`` events."""

    topic: str = param("/events", "EventPacket topic to subscribe to")
    evt3_time: Literal["faery", "openeb", "expelliarmus"] = param(
        "faery", "EVT 3.0 time semantics (see `evpipe info` / docs/formats.md)")

    def check(self):
        QosParams.check(self)
        PacketParams.check(self)
        check_topic("topic", self.topic)

    def check_files(self):
        check_extra("topic", ("rclpy", "rosidl_generator_py"))


@node_type("ros2_source", SOURCE, Ros2SourceParams)
class Ros2Source(RosEventSource):
    """Events from a ROS 2 event_camera_msgs/EventPacket topic (evt3), such as a camera driver's."""

    def __init__(self, name: str, params: Ros2SourceParams):
        super().__init__(name, params.topic, params.qos(), params.node_name, params.domain_id,
                         params.evt3_time, params.packet_us, params.packet_events)


@dataclass(frozen=True)
class RosbagParams(Params):
    """The rosbag sink records the event packets it receives as event_camera_msgs/EventPacket
    (evt3) messages on ``topic`` of the MCAP file ``path`` (a bare .mcap file; any other name:
    a rosbag2 folder)."""

    accepts = (EVENTS,)

    path: str = path_field(help="output .mcap file (or rosbag2 folder)", required=True)
    topic: str = param(DEFAULT_TOPIC, "topic of the EventPacket messages")
    frame_id: str = param("", "frame_id of every message header")

    def check(self):
        check_topic("topic", self.topic)

    def check_files(self):
        check_extra("path", ("rosbags",))


@node_type("rosbag", SINK, RosbagParams)
class RosbagSink(Sink):
    """Records events into an MCAP rosbag2 file as event_camera_msgs/EventPacket (evt3), one
    message per packet.

    The file is created at the first packet, with its sensor size; each message's log time and
    header stamp are the packet's ``origin_ns`` (host ns; the first event's time when the packet
    has none), its ``seq`` counts the messages. Completed when the sink closes, also after an
    error upstream.
    """

    def __init__(self, name: str, params: RosbagParams):
        super().__init__(name)
        self.params = params
        self.writer: RosbagWriter | None = None

    def consume(self, packet: Packet) -> None:
        events = _event_records(self.name, packet)
        header = packet.header
        if self.writer is None:
            self.writer = RosbagWriter(self.params.path, header.width, header.height,
                                       self.params.topic, self.params.frame_id)
        self.writer.write(events, header.origin_ns or None)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
