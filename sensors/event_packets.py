"""Canonical events <-> the fields of ``event_camera_msgs/EventPacket`` with ``encoding = "evt3"``.

Used by the rosbag2 files (``sensors.rosbag``) and the ROS 2 links (``sensors.ros2``); no ROS
library here. The message definition (ros-event-camera's event_camera_msgs) says "event ros time
= time_base + decoded event_time"; its README leaves ``time_base`` undefined for ``evt3``, whose
words carry the sensor time themselves (24 bits of us, wrapping every 2**24 us = 16.78 s). So:

- the encoder (``kernels.evt3``) writes each packet's events as EVT 3.0 words (little-endian,
  ``is_bigendian = False``) and ``time_base`` (ns) = 1000 x the part of the first event's time
  (us) that the 24 bits drop: ``time_base + 1000 x decoded time`` is the event time in ns. A
  stream's words start in the 24-bit period of its first event (the wraps before it are in
  ``time_base``, not stepped through), so a recording stamped in Unix time (about 2**50 us) costs
  no more words than one starting at 0;
- the decoder reads the packets of a topic as one EVT 3.0 stream (``sensors.prophesee``, in the
  chosen ``evt3_time`` mode), as camera drivers send it (a packet need not start with a time
  word), starting from the wraps that the ``time_base`` of the first packet with words gives.
"""

from __future__ import annotations

import numpy as np

from kernels.evt3 import encode
from pipeline.core.events import EVENT_DTYPE
from sensors.prophesee import EVT3_TIME_MODES, decode_words
from sensors.readers import FormatError

ENCODING = "evt3"
WRAP_US = 1 << 24  # the span of EVT 3.0's time words, us
MAX_SIZE = 2048  # EVT 3.0 addresses are 11 bits


class PacketEncoder:
    """Packets of canonical events into EventPacket fields, one stream (``seq`` counts packets)."""

    def __init__(self, width: int, height: int):
        if not (0 < width <= MAX_SIZE and 0 < height <= MAX_SIZE):
            raise ValueError(f"EVT 3.0 holds sensors up to {MAX_SIZE}x{MAX_SIZE} px, not {width}x{height}")
        self.width, self.height = width, height
        self.state = np.zeros(2, np.int64)  # kernels.evt3.encode_evt3's state
        self.started = False  # a packet with events was encoded
        self.seq = 0
        self.clamped = 0  # events sent at an earlier event's time (EVT 3.0 cannot go back)

    def fields(self, events: np.ndarray) -> dict:
        """The EventPacket fields (all but the header) of ``events``, the next packet."""
        events = np.ascontiguousarray(events, dtype=EVENT_DTYPE)
        first = max(int(events["t"][0]), int(self.state[1])) if len(events) else int(self.state[1])
        if len(events) and not self.started:  # TIME_HIGH counts from the first event's period
            self.state[0] = (first - first % WRAP_US) >> 12
            self.started = True
        words, clamped = encode(events, self.state)
        self.clamped += clamped
        fields = dict(height=self.height, width=self.width, seq=self.seq,
                      time_base=(first - first % WRAP_US) * 1000, encoding=ENCODING,
                      is_bigendian=False, events=words.tobytes())
        self.seq += 1
        return fields


class PacketDecoder:
    """EventPacket payloads of one topic back into canonical events; counts ``seq`` gaps.

    ``where`` names the origin in errors (a file and topic, or a topic), ``evt3_time`` is a mode
    of ``sensors.prophesee``.
    """

    def __init__(self, where: str, evt3_time: str = "faery"):
        if evt3_time not in EVT3_TIME_MODES:
            raise ValueError(f"evt3_time must be one of {', '.join(EVT3_TIME_MODES)}, not {evt3_time!r}")
        self.where = where
        self.evt3_time = evt3_time
        self.state: np.ndarray | None = None
        self.width = self.height = 0
        self.next_seq: int | None = None
        self.dropped = 0  # packets missing from the seq numbers
        self.packets = 0
        self._odd = b""  # a byte of a word split between packets
        self.started = False  # a packet with words was decoded

    def decode(self, width: int, height: int, seq: int, time_base: int, encoding: str,
               is_bigendian: bool, payload) -> list[np.ndarray]:
        """Chunks of canonical events of one packet; FormatError names ``where`` and the packet
        (its ``seq`` still counts: a packet that arrived bad is not a drop)."""
        if self.next_seq is not None and seq > self.next_seq:
            self.dropped += seq - self.next_seq
        self.next_seq = seq + 1
        self.packets += 1
        if encoding != ENCODING:
            raise FormatError(self.where, None, f"packet seq {seq}: encoding {encoding!r} is not "
                                                f"supported (supported: {ENCODING!r})")
        if is_bigendian:
            raise FormatError(self.where, None, f"packet seq {seq}: big-endian EVT 3.0 is not supported")
        if self.state is None:
            self.width, self.height = width, height
            self.state = np.zeros(8, np.int64)
        elif (width, height) != (self.width, self.height):
            raise FormatError(self.where, None, f"packet seq {seq}: sensor {width}x{height} after "
                                                f"{self.width}x{self.height}")
        data = self._odd + bytes(payload)
        if data and not self.started:
            self.state[3] = time_base // (1000 * WRAP_US)  # 24-bit wraps before the stream
            self.started = True
        cut = len(data) & ~1
        self._odd = data[cut:]
        words = np.frombuffer(data[:cut], "<u2")
        try:
            return list(decode_words(self.where, "evt3", words, 0, width, height, self.evt3_time,
                                     state=self.state))
        except FormatError as exc:
            raise FormatError(self.where, None, f"packet seq {seq}: {exc.problem}") from None
