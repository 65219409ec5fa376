"""The evpipe wire format over ZeroMQ (version 1), specified in docs/wire.md.

A packet is three frames:

1. topic: the stream name, UTF-8 (PUB/SUB prefix filtering works on it);
2. header: a UTF-8 JSON object with ``"v": 1`` and the fields of ``pipeline.core.packet.Header``,
   plus ``itemsize`` (bytes per record) so any reader can check the payload length. Unknown
   fields are ignored, and ``origin_ns``, added within version 1, reads as 0 when absent;
3. payload: the raw little-endian records (``count * itemsize`` bytes), or for ``dtype == "json"``
   a UTF-8 JSON array of objects.

A message holds one packet or, on a lossless link, a batch of consecutive data packets of one
stream with one record layout: still three frames, the header's per-packet fields (``count``,
``t_first``, ``t_last``, ``origin_ns``) as arrays, ``kind == "batch"``, the batch's distinct
segment markers once in ``segments`` and each packet's as an index into them (``segment``), the
payload every packet's records one after the other (``encode_batch``, ``decode_message``). A
receiver then parses one header and checks one payload for the whole batch.

Nothing is pickled. ``decode`` validates every frame and raises ``Malformed`` with a short reason
(one of ``REASONS``) that receivers count, so a bad message never stops a stage.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import orjson

from kernels.bounds import xy_range
from pipeline.core.events import JSON_DTYPE_NAME, dtype_by_name
from pipeline.core.packet import (
    BATCH,
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
    "frame_count",  # not three frames
    "header",  # header frame is not a JSON object with the required, well-typed fields
    "version",  # header version is not one we speak
    "topic",  # topic frame differs from the header's stream name
    "dtype",  # unknown record dtype, or itemsize that does not match it
    "payload_size",  # payload length is not count * itemsize (a batch: the sum of its counts)
    "bounds",  # x or y outside the declared sensor size
    "json_payload",  # a JSON payload that does not parse to a list
)

_REQUIRED = {
    "v": int, "stream": str, "seq": int, "dtype": str, "itemsize": int, "count": int,
    "width": int, "height": int, "t_first": int, "t_last": int, "clock": str,
    "sent_ns": int, "kind": str,
}
_REQUIRED_KEYS, _REQUIRED_TYPES = tuple(_REQUIRED), tuple(_REQUIRED.values())
# a batch: the per-packet fields are arrays (checked one by one), the rest as in one packet
_BATCH_REQUIRED = {**_REQUIRED, "count": list, "t_first": list, "t_last": list,
                   "origin_ns": list, "segment": list, "segments": list}
_BATCH_KEYS, _BATCH_TYPES = tuple(_BATCH_REQUIRED), tuple(_BATCH_REQUIRED.values())


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
def _batch_format(stream: str, dtype: str, itemsize: int, width: int, height: int,
                  clock: str) -> str:
    """The header JSON of one stream's batches as a %-format of the first sequence number, the
    send time, the per-packet arrays (count, t_first, t_last, origin_ns, segment) and the
    distinct segments, each given as the text between its brackets."""
    fixed = _header_format(stream, dtype, itemsize, width, height, clock, BATCH)
    return (fixed.replace('"count":%d', '"count":[%s]').replace('"t_first":%d,"t_last":%d',
                                                                '"t_first":[%s],"t_last":[%s]')
            .replace('"origin_ns":%d,"segment":%s',
                     '"origin_ns":[%s],"segment":[%s],"segments":[%s]'))


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


def batchable(packet: Packet) -> bool:
    """Whether ``packet`` may travel in a batch: a data packet of records (JSON payloads and
    end of stream travel alone)."""
    return packet.header.kind == DATA and packet.header.dtype != JSON_DTYPE_NAME


def same_batch(a: Header, b: Header) -> bool:
    """Whether packets with headers ``a`` and ``b`` may share a batch: one stream, one record
    layout, one sensor size and clock."""
    return (a.stream == b.stream and a.dtype == b.dtype and a.width == b.width
            and a.height == b.height and a.clock == b.clock)


def encode_batch(packets: list[Packet], sent_ns: int) -> list:
    """The three frames of one message carrying ``packets``: consecutive data packets of one
    stream, all ``batchable`` and ``same_batch``, at least two. The payload is their records one
    after the other, copied (batches carry small packets); ``sent_ns`` (host
    ``time.time_ns()``) is the batch's send time."""
    first = packets[0].header
    layout = dtype_by_name(first.dtype)
    records = [packet.records for packet in packets]
    if any(r.dtype != layout for r in records):
        raise TypeError(f"records of stream {first.stream!r} do not all have the registered "
                        f"{first.dtype!r} layout")
    headers = [packet.header for packet in packets]
    form = _batch_format(first.stream, first.dtype, layout.itemsize, first.width, first.height,
                         first.clock)
    distinct: dict[Segment, int] = {}
    for h in headers:
        if h.segment is not None:
            distinct.setdefault(h.segment, len(distinct))
    header = form % (first.seq, ",".join([str(h.count) for h in headers]),
                     ",".join([str(h.t_first) for h in headers]),
                     ",".join([str(h.t_last) for h in headers]), sent_ns,
                     ",".join([str(h.origin_ns) for h in headers]),
                     ",".join(["null" if h.segment is None else str(distinct[h.segment])
                               for h in headers]),
                     ",".join([_segment_json(segment) for segment in distinct]))
    # the records' bytes, padding included (numpy's promotion of structured layouts drops it)
    return [first.stream.encode(), header.encode(), b"".join([r.tobytes() for r in records])]


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


def _header_object(raw) -> dict:
    """The header frame's JSON object, of our version (parsed by orjson: a header of a 32-packet
    batch in about 7 us, against 26 us with the standard library's parser)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # invalid UTF-8 included
        raise Malformed("header", f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise Malformed("header", f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("v") != VERSION:
        raise Malformed("version", f"version {obj.get('v')!r}, this reader speaks {VERSION}")
    return obj


def _check_types(obj: dict, required: dict, keys: tuple, types: tuple) -> None:
    # exact types (JSON true/false parse to bool, not int): one comparison, the reason on failure
    if tuple(map(type, map(obj.get, keys))) != types:
        for key, kind in required.items():
            if type(obj.get(key)) is not kind:
                raise Malformed("header", f"field {key!r} must be {kind.__name__}, got {obj.get(key)!r}")


def _single_header(obj: dict) -> tuple[Header, int]:
    """Header and itemsize of a single packet from its header's JSON object, validated."""
    _check_types(obj, _REQUIRED, _REQUIRED_KEYS, _REQUIRED_TYPES)
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


def _ints(obj: dict, key: str, n: int, minimum: int | None) -> list[int]:
    """The batch header's array ``key``: ``n`` ints, each at least ``minimum`` (None: any)."""
    values = obj[key]
    if len(values) != n or set(map(type, values)) != {int}:
        raise Malformed("header", f"batch field {key!r} must be {n} integers")
    if minimum is not None and min(values) < minimum:
        raise Malformed("header", f"batch field {key!r} holds a value below {minimum}")
    return values


def _decode_batch(topic: bytes, obj: dict, payload_frame) -> list[Packet]:
    """The packets of a batch message (module docstring), validated whole."""
    _check_types(obj, _BATCH_REQUIRED, _BATCH_KEYS, _BATCH_TYPES)
    stream, first, dtype_name = obj["stream"], obj["seq"], obj["dtype"]
    n = len(obj["count"])
    if n < 2:
        raise Malformed("header", f"a batch holds at least 2 packets, got {n}")
    if first < 0:
        raise Malformed("header", "seq must be non-negative")
    counts = _ints(obj, "count", n, 0)
    t_firsts, t_lasts = _ints(obj, "t_first", n, None), _ints(obj, "t_last", n, None)
    origins = _ints(obj, "origin_ns", n, 0)
    distinct = [_segment(raw) for raw in obj["segments"]]
    segments = obj["segment"]
    if len(segments) != n or not set(map(type, segments)) <= {int, type(None)}:
        raise Malformed("header", f"batch field 'segment' must hold {n} indices or nulls")
    indices = [i for i in segments if i is not None]
    if indices and (min(indices) < 0 or max(indices) >= len(distinct)):
        raise Malformed("header", f"a segment index outside the {len(distinct)} segments")
    segments = [None if i is None else distinct[i] for i in segments]
    if topic != stream.encode():
        raise Malformed("topic", f"topic {topic[:64]!r} but header stream {stream!r}")
    dtype = _record_dtype(dtype_name, obj["itemsize"])
    payload = _buffer(payload_frame)
    total = sum(counts)
    if len(payload) != total * dtype.itemsize:
        raise Malformed("payload_size", f"{len(payload)} bytes for {total} records of "
                                        f"{dtype.itemsize} bytes in a batch of {n}")
    records = np.frombuffer(payload, dtype=dtype) if total else np.empty(0, dtype)
    width, height, clock, sent_ns = obj["width"], obj["height"], obj["clock"], obj["sent_ns"]
    check_bounds(width, height, records)
    packets, offset = [], 0
    for i in range(n):
        count = counts[i]
        # an empty packet gets a fresh empty array, as ``decode`` gives it: the same array type
        part = records[offset:offset + count] if count else np.empty(0, dtype)
        offset += count
        packets.append(Packet(Header(stream, first + i, dtype_name, width, height, t_firsts[i],
                                     t_lasts[i], count, clock, sent_ns, DATA, segments[i],
                                     origins[i]), part))
    return packets


def _buffer(frame) -> memoryview:
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


def decode(frames) -> Packet:
    """Packet from the frames of a single packet (``zmq.Frame`` or bytes); the records view the
    payload buffer."""
    packets = decode_message(frames)
    if len(packets) != 1:
        raise Malformed("frame_count", f"expected one packet, got a batch of {len(packets)}")
    return packets[0]


def _decode(topic: bytes, obj: dict, payload_frame) -> Packet:
    """Packet from its topic (bytes), its header's JSON object and its payload frame, validated."""
    payload = _buffer(payload_frame)
    header, itemsize = _single_header(obj)
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
    dtype = _record_dtype(header.dtype, itemsize)
    if len(payload) != header.count * itemsize:
        raise Malformed("payload_size",
                        f"{len(payload)} bytes for {header.count} records of {itemsize} bytes")
    records = np.frombuffer(payload, dtype=dtype) if len(payload) else np.empty(0, dtype)
    check_bounds(header.width, header.height, records)
    return Packet(header, records)


def _record_dtype(name: str, itemsize: int) -> np.dtype:
    """The registered record layout ``name``, checked against the header's ``itemsize``."""
    try:
        dtype = dtype_by_name(name)
    except KeyError as exc:
        raise Malformed("dtype", str(exc.args[0])) from None
    if itemsize != dtype.itemsize:
        raise Malformed("dtype", f"itemsize {itemsize} but {name!r} records are {dtype.itemsize} bytes")
    return dtype


def decode_message(frames) -> list[Packet]:
    """The packets of one received message: one packet, or every packet of a batch (valid only
    whole: anything malformed in it raises ``Malformed`` for all of them)."""
    if len(frames) != 3:
        raise Malformed("frame_count", f"expected 3 frames, got {len(frames)}")
    topic = bytes(_buffer(frames[0]))
    obj = _header_object(_buffer(frames[1]))
    if obj.get("kind") == BATCH:
        return _decode_batch(topic, obj, frames[2])
    return [_decode(topic, obj, frames[2])]


@functools.cache
def _compiled_layout(dtype: np.dtype) -> bool:
    """Whether records have int16 x and y at bytes 8 and 10 of 16 (what ``xy_range`` reads)."""
    fields = dtype.fields or {}
    return (dtype.itemsize == 16 and "x" in fields and "y" in fields
            and fields["x"][:2] == (np.dtype("<i2"), 8) and fields["y"][:2] == (np.dtype("<i2"), 10))


def check_bounds(width: int, height: int, records: np.ndarray) -> None:
    """Raise Malformed('bounds') when an x/y field lies outside the declared ``width`` and
    ``height`` (pixels; unchecked when either is 0)."""
    if not len(records) or width <= 0 or height <= 0:
        return
    sizes = (("x", width), ("y", height))
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


__all__ = ["VERSION", "REASONS", "Malformed", "encode", "decode", "encode_batch", "decode_message",
           "DATA", "EOS"]
