"""rosbag2 files (MCAP and sqlite3) of ``event_camera_msgs/EventPacket`` messages, with ``rosbags``.

Reading: a bag folder (``metadata.yaml`` and its storage files), a bare ``.mcap`` file or a bare
``.db3`` file; formats detected from the content (MCAP magic bytes, an SQLite file with rosbag2's
``topics`` table, a folder whose ``metadata.yaml`` says ``rosbag2_bagfile_information``). One
EventPacket topic is decoded (``sensors.event_packets``): the one named by ``topic``, else the
only one, else ``/events``. Writing: MCAP, one EventPacket per packet on one topic, the message
definition stored with the connection; a target ending in ``.mcap`` is written as one bare MCAP
file (what ``ros2 bag play``, rosbag2 readers and ``rosbags`` open), any other as a rosbag2 folder.
Needs the ``ros2`` extra (``rosbags``); FormatError names the file and the topic otherwise.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Iterable, Iterator

import numpy as np

from sensors.event_packets import PacketDecoder, PacketEncoder
from sensors.readers import Format, FormatError, Reader, open_reader, register_format
from sensors.ros_msgs import EVENT_PACKET, msg_text

MCAP_MAGIC = b"\x89MCAP0\r\n"
SQLITE_MAGIC = b"SQLite format 3\x00"
DEFAULT_TOPIC = "/events"


def _rosbags(path):
    """The rosbags modules used here; FormatError naming the extra when they are missing."""
    try:
        from rosbags import rosbag2, typesys
    except ImportError:
        raise FormatError(path, None, "reading and writing rosbag2 files needs the 'ros2' extra "
                                      "(pip install -e '.[ros2]')") from None
    return rosbag2, typesys


def typestore(path):
    """A rosbags type store (ROS 2 Kilted) with ``event_camera_msgs/msg/EventPacket`` added."""
    _, typesys = _rosbags(path)
    store = typesys.get_typestore(typesys.Stores.ROS2_KILTED)
    store.register(typesys.get_types_from_msg(msg_text(EVENT_PACKET), EVENT_PACKET.type_name))
    return store


def event_topics(path) -> dict[str, int]:
    """EventPacket topics of the bag at ``path`` and their message counts."""
    rosbag2, _ = _rosbags(path)
    try:
        with rosbag2.Reader(path) as bag:
            return {c.topic: c.msgcount for c in bag.connections if c.msgtype == EVENT_PACKET.type_name}
    # rosbags raises TypeError on an MCAP file cut after its magic bytes (ord() of b"")
    except (rosbag2.errors.ReaderError, OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(path, None, f"not a readable rosbag2 file ({exc})") from None


def choose_topic(path, topics: dict[str, int], topic: str) -> str:
    """``topic`` if the bag has it, else the only EventPacket topic, else ``/events``."""
    listed = ", ".join(sorted(topics)) or "none"
    if topic:
        if topic not in topics:
            raise FormatError(path, None, f"no {EVENT_PACKET.type_name} topic {topic!r} "
                                          f"(EventPacket topics: {listed})")
        return topic
    if len(topics) == 1:
        return next(iter(topics))
    if DEFAULT_TOPIC in topics:
        return DEFAULT_TOPIC
    raise FormatError(path, None, f"{len(topics)} {EVENT_PACKET.type_name} topics ({listed}); "
                                  f"choose one with topic=NAME")


def open_rosbag(path: str, topic: str = "", evt3_time: str = "faery", width: int = 0,
                height: int = 0) -> Reader:
    """The events of one EventPacket topic of a rosbag2 bag or file (``evt3`` encoding).

    The sensor size is the messages' ``width`` and ``height`` (a replay's ``width`` and
    ``height``, when given, must agree). Times: us, the stream's own time base
    (``sensors.event_packets``).
    """
    rosbag2, _ = _rosbags(path)
    topics = event_topics(path)
    name = choose_topic(path, topics, topic)
    store = typestore(path)
    where = f"{path} topic {name}"
    first = _first_packet(path, name, store)
    if first is None:
        raise FormatError(path, None, f"topic {name} holds no message")
    size = (int(first.width), int(first.height))
    if width and height and (width, height) != size:
        raise FormatError(path, None, f"topic {name} holds a {size[0]}x{size[1]} sensor, not {width}x{height}")

    def chunks() -> Iterator[np.ndarray]:
        decoder = PacketDecoder(where, evt3_time)
        for message in _messages(path, name, store):
            yield from decoder.decode(message.width, message.height, message.seq, message.time_base,
                                      message.encoding, message.is_bigendian, message.events)

    return Reader(path=os.fspath(path), format="rosbag2", width=size[0], height=size[1],
                  chunks=chunks, streams=[t for t in sorted(topics) if t != name])


def _messages(path, topic: str, store) -> Iterator:
    rosbag2, _ = _rosbags(path)
    try:
        with rosbag2.Reader(path) as bag:
            connections = [c for c in bag.connections if c.topic == topic]
            for connection, _, raw in bag.messages(connections=connections):
                yield store.deserialize_cdr(raw, connection.msgtype)
    except (rosbag2.errors.ReaderError, OSError, ValueError, KeyError, IndexError) as exc:
        raise FormatError(path, None, f"topic {topic}: unreadable message ({exc})") from None


def _first_packet(path, topic: str, store):
    return next(_messages(path, topic, store), None)


class RosbagWriter:
    """Writes packets of canonical events as EventPacket messages on ``topic`` of an MCAP bag.

    ``path`` ending in ``.mcap``: one bare MCAP file, made in a folder beside it and moved into
    place at ``close``; otherwise a rosbag2 folder. Each message's log time and header stamp are
    ``stamp_ns`` given to ``write`` (default: the first event's time, us -> ns); its ``seq``
    counts the packets from 0; ``frame_id`` goes into every header.
    """

    def __init__(self, path, width: int, height: int, topic: str = DEFAULT_TOPIC, frame_id: str = ""):
        rosbag2, _ = _rosbags(path)
        self.path = pathlib.Path(path)
        if self.path.exists():
            raise FormatError(path, None, "exists already; not overwriting")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.bare = self.path.suffix.lower() == ".mcap"
        self.folder = (pathlib.Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
                       / self.path.stem) if self.bare else self.path
        self.store = typestore(path)
        self.encoder = PacketEncoder(width, height)
        self.frame_id = frame_id
        self.events = 0
        self.writer = rosbag2.Writer(self.folder, version=9,
                                     storage_plugin=rosbag2.StoragePlugin.MCAP)
        self.writer.open()
        self.connection = self.writer.add_connection(topic, EVENT_PACKET.type_name, typestore=self.store)

    def _message(self, events: np.ndarray, stamp_ns: int):
        Header = self.store.types["std_msgs/msg/Header"]
        Time = self.store.types["builtin_interfaces/msg/Time"]
        fields = self.encoder.fields(events)
        fields["events"] = np.frombuffer(fields["events"], np.uint8)
        header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                        frame_id=self.frame_id)
        return self.store.types[EVENT_PACKET.type_name](header=header, **fields)

    def write(self, events: np.ndarray, stamp_ns: int | None = None) -> None:
        """Write ``events`` (canonical, time-ordered) as the next message."""
        if not len(events):
            return
        stamp = int(events["t"][0]) * 1000 if stamp_ns is None else stamp_ns
        message = self._message(events, max(stamp, 0))
        self.writer.write(self.connection, max(stamp, 0),
                          self.store.serialize_cdr(message, EVENT_PACKET.type_name))
        self.events += len(events)

    def close(self) -> None:
        """Finish the bag (and move a bare MCAP file into place)."""
        self.writer.close()
        if self.bare:
            os.replace(self.folder / f"{self.folder.name}.mcap", self.path)
            shutil.rmtree(self.folder.parent, ignore_errors=True)


def write_rosbag(path, chunks: Iterable[np.ndarray], width: int, height: int,
                 topic: str = DEFAULT_TOPIC, packet_events: int = 10_000) -> int:
    """Write the events of ``chunks`` into an MCAP bag, ``packet_events`` a message; returns the
    event count."""
    writer = RosbagWriter(path, width, height, topic)
    try:
        for chunk in chunks:
            for start in range(0, len(chunk), packet_events):
                writer.write(chunk[start:start + packet_events])
    finally:
        writer.close()
    return writer.events


def convert(source, target, format: str = "auto", topic: str = DEFAULT_TOPIC, **options) -> dict:
    """Read ``source`` (any readable format; ``rosbag2:TOPIC`` picks a bag's topic) and write
    the MCAP bag ``target`` on ``topic``; returns a summary as ``sensors.writers.convert``."""
    reader = open_reader(source, format, **options)
    count = write_rosbag(target, reader.chunks(), reader.width, reader.height, topic)
    return {"from": reader.path, "format": reader.format, "to": os.fspath(target), "events": count,
            "width": reader.width, "height": reader.height}


def _detect(path: str, head: bytes) -> bool:
    if os.path.isdir(path):
        try:
            with open(os.path.join(path, "metadata.yaml"), "rb") as handle:
                return b"rosbag2_bagfile_information" in handle.read(4096)
        except OSError:
            return False
    return head.startswith(MCAP_MAGIC) or (head.startswith(SQLITE_MAGIC) and b"topics" in head)


register_format(Format("rosbag2", _detect, open_rosbag, (".mcap", ".db3"), selector="topic"))
