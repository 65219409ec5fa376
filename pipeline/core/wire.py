"""The evpipe wire format over ZeroMQ (version 1), specified in docs/wire.md.

A packet is three frames:

1. topic: the stream name, UTF-8 (PUB/SUB prefix filtering works on it);
2. header: a UTF-8 JSON object with ``"v": 1`` and the fields of ``pipeline.core.packet.Header``,
   plus ``itemsize`` (bytes per record) so any reader can check the payload length. Unknown
   fields are ignored, and ``origin_ns``, added within version 1, reads as 0 when absent;
3. payload: the raw little-endian records (``count * itemsize`` bytes), or for ``dtype == "json"``
   a UTF-8 JSON array of objects.

A message holds one packet (three frames) or, on a lossless link, a batch of consecutive data
packets of one stream: the topic, then a header and a payload frame per packet
(``decode_message``).

Nothing is pickled. ``decode`` validates every frame and raises ``Malformed`` with a short reason
(one of ``REASONS``) that receivers count, so a bad message never stops a stage.
"""

from __future__ import annotations

import functools
import json

import numpy as np

from kernels.bounds import xy_range
from pipeline.core.events import JSON_DTYPE_NAME, dtype_by_name
from pipeline.core.packet import (
    DATA,
    EOS,
    KINDS,
    Header,
    Packet,
    Segment,
    encode_json_records,
)

VERSION = 1

REASONS = (
    "frame_count",  # not three frames, nor a batch of 1 + 2k with no end of stream
    "header",  # header frame is not a JSON object with the required, well-typed fields
    "version",  # header version is not one we speak
    "topic",  # topic frame differs from the header's stream name
    "dtype",  # unknown record dtype, or itemsize that does not match it
    "payload_size",  # payload length is not count * itemsize
    "bounds",  # x or y outside the declared sensor size
    "json_payload",  # a JSON payload that does not parse to a list
)

_REQUIRED = {
    "v": int, "stream": str, "seq": int, "dtype": str, "itemsize": int, "count": int,
    "width": int, "height": int, "t_first": int, "t_last": int, "clock": str,
    "sent_ns": int, "kind": str,
}
_REQUIRED_KEYS, _REQUIRED_TYPES = tuple(_REQUIRED), tuple(_REQUIRED.values())
_HEADER_DECODER = json.JSONDecoder()  # decodes str directly: no encoding detection per header


class Malformed(ValueError):
    """A received message that breaks the wire format; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"))


@functools.lru_cache(maxsize=1024)
def _header_format(stream: str, dtype: str, itemsize: int, width: int, height: int, clock: str,
                   kind: str) -> str:
    """The header JSON of one stream's packets as a %-format of its per-packet fields (seq,
    count, t_first, t_last, sent_ns, origin_ns, segment): what does not change per stream is
    serialised once."""
    fixed = {"stream": stream, "dtype": dtype, "itemsize": itemsize, "width": width,
             "height": height, "clock": clock, "kind": kind}
    fixed = {key: _json(value).replace("%", "%%") for key, value in fixed.items()}
    return (f'{{"v":{VERSION},"stream":{fixed["stream"]},"seq":%d,"dtype":{fixed["dtype"]},'
            f'"itemsize":{fixed["itemsize"]},"count":%d,"width":{fixed["width"]},'
            f'"height":{fixed["height"]},"t_first":%d,"t_last":%d,"clock":{fixed["clock"]},'
            f'"sent_ns":%d,"kind":{fixed["kind"]},"origin_ns":%d,"segment":%s}}')


@functools.lru_cache(maxsize=1024)
def _segment_json(seg: Segment | None) -> str:
    if seg is None:
        return "null"
    return _json({"id": seg.id, "start": seg.start, "end": seg.end, "label": seg.label,
                  "name": seg.name})


def encode_header(header: Header, itemsize: int, sent_ns: int | None = None) -> bytes:
    """The header frame: ``header`` as JSON, with ``itemsize`` and, when given, ``sent_ns``."""
    form = _header_format(header.stream, header.dtype, itemsize, header.width, header.height,
                          header.clock, header.kind)
    return (form % (header.seq, header.count, header.t_first, header.t_last,
                    header.sent_ns if sent_ns is None else sent_ns, header.origin_ns,
                    _segment_json(header.segment))).encode()


def encode(packet: Packet, sent_ns: int | None = None) -> list:
    """The three frames of ``packet``; the payload frame is the record buffer itself (no copy).

    ``sent_ns`` (host ``time.time_ns()``) replaces the header's send time when given: links stamp
    the moment each copy is sent.
    """
    header = packet.header
    if header.dtype == JSON_DTYPE_NAME:
        payload = encode_json_records(packet.records)
        itemsize = 0
    else:
        records = np.ascontiguousarray(packet.records)
        if records.dtype != dtype_by_name(header.dtype):
            raise TypeError(f"records of stream {header.stream!r} have layout {records.dtype}, "
                            f"not the registered {header.dtype!r} layout")
        payload = memoryview(records).cast("B") if records.size else b""
        itemsize = records.dtype.itemsize
    return [header.stream.encode(), encode_header(header, itemsize, sent_ns), payload]


def _segment(raw) -> Segment | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), int):
        raise Malformed("header", f"segment must be null or an object with an integer id, got {raw!r}")
    label, name = raw.get("label"), raw.get("name")
    if label is not None and not isinstance(label, str) or name is not None and not isinstance(name, str):
        raise Malformed("header", "segment label and name must be strings or null")
    return _segment_of(raw["id"], bool(raw.get("start", False)), bool(raw.get("end", False)),
                       label, name)


@functools.lru_cache(maxsize=1024)
def _segment_of(id_: int, start: bool, end: bool, label: str | None, name: str | None) -> Segment:
    """One shared Segment per marker: every packet of a segment carries the same one, and a
    frozen dataclass costs more to build than to look up."""
    return Segment(id_, start, end, label, name)


def parse_header(raw: bytes) -> tuple[Header, int]:
    """Header and itemsize from the header frame, validated."""
    try:
        obj = _HEADER_DECODER.decode(str(raw, "utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Malformed("header", f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise Malformed("header", f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("v") != VERSION:
        raise Malformed("version", f"version {obj.get('v')!r}, this reader speaks {VERSION}")
    # exact types (JSON true/false parse to bool, not int): one comparison, the reason on failure
    if tuple(map(type, map(obj.get, _REQUIRED_KEYS))) != _REQUIRED_TYPES:
        for key, kind in _REQUIRED.items():
            if type(obj.get(key)) is not kind:
                raise Malformed("header", f"field {key!r} must be {kind.__name__}, got {obj.get(key)!r}")
    if obj["kind"] not in KINDS:
        raise Malformed("header", f"kind {obj['kind']!r} is not one of {KINDS}")
    origin_ns = obj.get("origin_ns", 0)  # absent in headers of senders that predate it
    if type(origin_ns) is not int:
        raise Malformed("header", f"field 'origin_ns' must be int, got {origin_ns!r}")
    if obj["count"] < 0 or obj["itemsize"] < 0 or obj["seq"] < 0 or origin_ns < 0:
        raise Malformed("header", "count, itemsize, seq and origin_ns must be non-negative")
    header = Header(obj["stream"], obj["seq"], obj["dtype"], obj["width"], obj["height"],
                    obj["t_first"], obj["t_last"], obj["count"], obj["clock"], obj["sent_ns"],
                    obj["kind"], _segment(obj.get("segment")), origin_ns)
    return header, obj["itemsize"]


def _buffer(frame) -> memoryview:
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


def decode(frames) -> Packet:
    """Packet from received frames (``zmq.Frame`` or bytes); the records view the payload buffer."""
    if len(frames) != 3:
        raise Malformed("frame_count", f"expected 3 frames, got {len(frames)}")
    return _decode(bytes(_buffer(frames[0])), frames[1], frames[2])


def _decode(topic: bytes, head_frame, payload_frame) -> Packet:
    """Packet from its topic (bytes) and its header and payload frames, validated."""
    head, payload = _buffer(head_frame), _buffer(payload_frame)
    header, itemsize = parse_header(head)
    if topic != header.stream.encode():
        raise Malformed("topic", f"topic {topic[:64]!r} but header stream {header.stream!r}")
    if header.kind == EOS:
        return Packet(header, np.empty(0, dtype_by_name("events")))
    if header.dtype == JSON_DTYPE_NAME:
        try:
            records = json.loads(bytes(payload)) if len(payload) else []
        except (UnicodeDecodeError, ValueError) as exc:
            raise Malformed("json_payload", f"payload is not JSON ({exc})") from None
        if not isinstance(records, list) or len(records) != header.count:
            raise Malformed("json_payload", f"expected a JSON list of {header.count} records")
        return Packet(header, records)
    try:
        dtype = dtype_by_name(header.dtype)
    except KeyError as exc:
        raise Malformed("dtype", str(exc.args[0])) from None
    if itemsize != dtype.itemsize:
        raise Malformed("dtype", f"itemsize {itemsize} but {header.dtype!r} records are {dtype.itemsize} bytes")
    if len(payload) != header.count * itemsize:
        raise Malformed("payload_size",
                        f"{len(payload)} bytes for {header.count} records of {itemsize} bytes")
    records = np.frombuffer(payload, dtype=dtype) if len(payload) else np.empty(0, dtype)
    check_bounds(header, records)
    return Packet(header, records)


def batch_frames(packets_frames: list[list]) -> list:
    """One message of several packets' frames (each from ``encode``, all of one stream): the
    topic once, then each header and payload."""
    out = [packets_frames[0][0]]
    for frames in packets_frames:
        out += frames[1:]
    return out


def decode_message(frames) -> list[Packet]:
    """The packets of one received message: three frames, or a batch of 1 + 2k frames (the
    topic, then a header and a payload per packet). A batch is valid only whole: its first
    malformed packet, or an end of stream inside it, raises ``Malformed`` for all of them."""
    if len(frames) == 3:
        return [decode(frames)]
    if len(frames) < 3 or len(frames) % 2 == 0:
        raise Malformed("frame_count", f"expected 3 frames or a batch of 1 + 2k, got {len(frames)}")
    topic = bytes(_buffer(frames[0]))
    packets = [_decode(topic, frames[i], frames[i + 1]) for i in range(1, len(frames), 2)]
    if any(packet.is_eos for packet in packets):
        raise Malformed("frame_count", "an end of stream travels alone, never in a batch")
    return packets


@functools.cache
def _compiled_layout(dtype: np.dtype) -> bool:
    """Whether records have int16 x and y at bytes 8 and 10 of 16 (what ``xy_range`` reads)."""
    fields = dtype.fields or {}
    return (dtype.itemsize == 16 and "x" in fields and "y" in fields
            and fields["x"][:2] == (np.dtype("<i2"), 8) and fields["y"][:2] == (np.dtype("<i2"), 10))


def check_bounds(header: Header, records: np.ndarray) -> None:
    """Raise Malformed('bounds') when an x/y field lies outside the declared width/height."""
    if not len(records) or header.width <= 0 or header.height <= 0:
        return
    sizes = (("x", header.width), ("y", header.height))
    if _compiled_layout(records.dtype):  # one compiled pass over the buffer
        x_low, x_high, y_low, y_high = xy_range(records.view(np.int16).reshape(len(records), 8))
        ranges = ((x_low, x_high), (y_low, y_high))
    else:
        names = records.dtype.names or ()
        sizes = tuple((axis, size) for axis, size in sizes if axis in names)
        ranges = tuple((int(records[axis].min()), int(records[axis].max())) for axis, _ in sizes)
    for (axis, size), (low, high) in zip(sizes, ranges):
        if low < 0 or high >= size:
            raise Malformed("bounds", f"{axis} in [{low}, {high}] outside [0, {size})")


__all__ = ["VERSION", "REASONS", "Malformed", "encode", "decode", "batch_frames", "decode_message",
           "parse_header", "DATA", "EOS"]
