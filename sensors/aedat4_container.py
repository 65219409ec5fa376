"""AEDAT 4.0 container walk: checks a file so that dv-processing can neither hang nor crash on it.

Layout (iniVation, "AEDAT 4.0" file format; flatbuffers little-endian):

- offset 0: ``#!AER-DAT4.0\\r\\n`` (14 bytes); offset 14: uint32 IOHeader size n;
- offset 18: the IOHeader flatbuffer (identifier ``IOHE``): compression (int32: 0 none, 1 LZ4,
  2 LZ4 high, 3 Zstd, 4 Zstd high), dataTablePosition (int64, -1 when absent) and infoNode (XML:
  one node per stream id, with originalOutputName, typeIdentifier and info/source);
- offset 18 + n: packets, each int32 stream id, int32 payload size, then the payload: a
  size-prefixed flatbuffer whose identifier is the stream type (EVTS, IMUS, TRIG, FRME...),
  stored as one LZ4 frame, one Zstd frame or as is;
- dataTablePosition to the end: the FileDataTable, stored like a payload: a size-prefixed
  flatbuffer ``FTAB`` with one FileDataDefinition per packet (ByteOffset of its payload,
  PacketInfo = stream id and size, NumElements, TimestampStart, TimestampEnd in us).

What dv-processing 2.0.4 does with corrupt input (fuzzed on the bundled DVXplorer recording):
``MonoCameraRecording`` finds packets through the FileDataTable, never through packet headers, and
decodes only the packets of the event stream it is asked for (every packet when the file has no
table). Its LZ4 loop retries forever when ``LZ4F_decompress`` reports an error, so an LZ4 error in
the table hangs the constructor and one in an event payload hangs ``getNextEventBatch`` (15 % of
random byte flips in event payloads). It unpacks EventPacket flatbuffers unverified: a bad vector
length or vtable offset segfaults or yields garbage. It ignores Zstd errors. An IOHeader size
past the end of the file makes it zero-fill that many bytes before failing (9 s for 2 GiB).

``read_container`` therefore checks, before dv-processing opens the file, everything it trusts:
the IOHeader, the FileDataTable (decoded here) and every packet header against the file bounds,
the declared streams and its table entry; without a table, every payload. Event payloads are
checked by ``lz4_event_payload_problem`` (LZ4 frames walked as ``LZ4F_decompress`` decodes them,
writing out only the first bytes; the EventPacket flatbuffer bounded as flatbuffers' ``Verifier``
bounds it), which ``sensors.aedat4`` runs in a thread ahead of dv-processing's decoding
(``check_event_payloads``); stored and Zstd payloads are checked here, with the rest.
"""

from __future__ import annotations

import mmap
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

import numpy as np
from numba import njit

from sensors.readers import FormatError

MAGIC = b"#!AER-DAT4.0\r\n"
HEADER_START = len(MAGIC) + 4  # the IOHeader flatbuffer follows its uint32 size
COMPRESSIONS = ("none", "LZ4", "LZ4 high", "Zstd", "Zstd high")
HEAD_BYTES = 64  # decoded bytes kept per event payload: its flatbuffer header, vtable and vector length
ZSTD_MAX_CONTENT = 1 << 31  # a flatbuffer cannot be larger

# Problem codes returned by the compiled checks (0 means none); their text, by code.
PROBLEMS = (
    "",
    "payload too short for a size-prefixed flatbuffer",
    "flatbuffer size prefix is not the payload size",
    "flatbuffer identifier is not the stream type",
    "flatbuffer root table or vtable out of bounds",
    "flatbuffer vector out of bounds",
    "no LZ4 frame magic",
    "unsupported LZ4 frame descriptor",
    "LZ4 frame header checksum mismatch",
    "LZ4 block larger than the frame's maximum block size",
    "LZ4 frame ends before its end mark",
    "corrupt LZ4 sequence",
    "LZ4 match reaches before the start of the frame",
    "LZ4 block checksum mismatch",
    "LZ4 content size mismatch",
    "LZ4 content checksum mismatch",
    "bytes after the LZ4 frame's end mark",
)
(_, SHORT, PREFIX, IDENTIFIER, TABLE, VECTOR, LZ4_MAGIC, LZ4_DESCRIPTOR, LZ4_HEADER_SUM, LZ4_BLOCK_SIZE,
 LZ4_TRUNCATED, LZ4_SEQUENCE, LZ4_OFFSET, LZ4_BLOCK_SUM, LZ4_CONTENT_SIZE, LZ4_CONTENT_SUM, LZ4_TRAILING) = range(17)
NEED_OUTPUT = 100  # internal: the check needs more decoded bytes than the buffer it was given
EVENT_BYTES = 16  # dv::Event struct: int64 timestamp, int16 x, int16 y, bool polarity, padding

_EVTS = np.frombuffer(b"EVTS", np.uint8)
_FTAB = np.frombuffer(b"FTAB", np.uint8)
_IOHE = np.frombuffer(b"IOHE", np.uint8)


@dataclass(frozen=True)
class Stream:
    id: int
    name: str  # originalOutputName: "events", "imu", "triggers", "frames"...
    type: str  # typeIdentifier: EVTS, IMUS, TRIG, FRME...
    source: str  # the camera name, "" when the stream names none


@dataclass
class Container:
    """A checked AEDAT 4.0 file: its bytes (memory-mapped) and the event payloads dv-processing reads.

    ``events`` rows are (packet header offset, payload offset, payload size) in bytes, in the
    order ``MonoCameraRecording.getNextEventBatch`` decodes them; ``events_checked`` says whether
    their payloads were checked already (all but LZ4 files with a FileDataTable).
    """

    path: str
    data: np.ndarray
    compression: int
    streams: dict[int, Stream]
    events: np.ndarray
    events_checked: bool

    def problem(self, row: int, code: int, at: int) -> FormatError:
        """The FormatError for event payload ``row`` (problem ``code``, LZ4 problems at file byte ``at``)."""
        header, payload, size = (int(v) for v in self.events[row])
        return payload_error(self.path, header, size, code, at)


def payload_error(path: str, header: int, size: int, code: int, at: int) -> FormatError:
    """FormatError at the header of a bad packet; ``at`` is the bad file byte of an LZ4 problem."""
    where = f" at file byte {at}" if code >= LZ4_MAGIC else " in its decoded flatbuffer"
    return FormatError(path, header, f"corrupt AEDAT 4.0 packet ({size}-byte payload): {PROBLEMS[code]}{where}")


# ---------------------------------------------------------------------------------------------
# Little-endian reads, xxHash32 (the LZ4 frame checksums) and flatbuffer bounds, compiled.

@njit(cache=True, nogil=True)
def _u16(b, i):
    return np.int64(b[i]) | (np.int64(b[i + 1]) << 8)


@njit(cache=True, nogil=True)
def _u32(b, i):
    return _u16(b, i) | (_u16(b, i + 2) << 16)


@njit(cache=True, nogil=True)
def _i32(b, i):
    v = _u32(b, i)
    return v - (1 << 32) if v >= (1 << 31) else v


@njit(cache=True, nogil=True)
def _i64(b, i):
    return (_i32(b, i + 4) << 32) | _u32(b, i)


@njit(cache=True, nogil=True)
def _rotl32(x, r):
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


@njit(cache=True, nogil=True)
def _xxh32_round(acc, lane):
    acc = (acc + lane * 2246822519) & 0xFFFFFFFF
    return (_rotl32(acc, 13) * 2654435761) & 0xFFFFFFFF


@njit(cache=True, nogil=True)
def xxh32(b, start, end):
    """xxHash32 (seed 0) of b[start:end], the checksum of the LZ4 frame format."""
    p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
    i = start
    if end - start >= 16:
        v1, v2, v3, v4 = (p1 + p2) & 0xFFFFFFFF, p2, 0, (1 << 32) - p1
        while i + 16 <= end:
            v1 = _xxh32_round(v1, _u32(b, i))
            v2 = _xxh32_round(v2, _u32(b, i + 4))
            v3 = _xxh32_round(v3, _u32(b, i + 8))
            v4 = _xxh32_round(v4, _u32(b, i + 12))
            i += 16
        h = (_rotl32(v1, 1) + _rotl32(v2, 7) + _rotl32(v3, 12) + _rotl32(v4, 18)) & 0xFFFFFFFF
    else:
        h = p5
    h = (h + end - start) & 0xFFFFFFFF
    while i + 4 <= end:
        h = (_rotl32((h + _u32(b, i) * p3) & 0xFFFFFFFF, 17) * p4) & 0xFFFFFFFF
        i += 4
    while i < end:
        h = (_rotl32((h + np.int64(b[i]) * p5) & 0xFFFFFFFF, 11) * p1) & 0xFFFFFFFF
        i += 1
    h = ((h ^ (h >> 15)) * p2) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * p3) & 0xFFFFFFFF
    return h ^ (h >> 16)


@njit(cache=True, nogil=True)
def _readable(p, k, n, avail):
    """0 when bytes [p, p + k) of an n-byte buffer are in bounds and in the avail bytes held."""
    if p < 0 or p + k > n:
        return TABLE
    return NEED_OUTPUT if p + k > avail else 0


@njit(cache=True, nogil=True)
def _table(b, n, avail, t):
    """(problem, vtable position, vtable size, table size) of the flatbuffer table at t.

    As flatbuffers' Verifier without alignment checks (dv-processing's own IOHeaders would fail
    them): table, vtable and the fields the vtable sizes inside the buffer.
    """
    problem = _readable(t, 4, n, avail)
    if problem:
        return problem, 0, 0, 0
    vt = t - _i32(b, t)
    problem = _readable(vt, 4, n, avail)
    if problem:
        return problem, 0, 0, 0
    vsize, tsize = _u16(b, vt), _u16(b, vt + 2)
    if vsize < 4 or vsize % 2 or tsize < 4:
        return TABLE, 0, 0, 0
    problem = _readable(vt, vsize, n, avail) or _readable(t, tsize, n, avail)
    return problem, vt, vsize, tsize


@njit(cache=True, nogil=True)
def _field(b, t, vt, vsize, tsize, index, size):
    """Position of field ``index`` (size bytes) of a table, 0 when absent, -1 when out of it."""
    if 6 + 2 * index > vsize:
        return 0
    offset = _u16(b, vt + 4 + 2 * index)
    if offset == 0:
        return 0
    if offset < 4 or offset + size > tsize:
        return -1
    return t + offset


@njit(cache=True, nogil=True)
def _vector(b, n, avail, f, element):
    """(problem, first element position, length) of the vector whose uoffset is at f."""
    problem = _readable(f, 4, n, avail)
    if problem:
        return problem, 0, 0
    v = f + _u32(b, f)
    problem = _readable(v, 4, n, avail)
    if problem:
        return problem, 0, 0
    length = _u32(b, v)
    if v + 4 + length * element > n:
        return VECTOR, 0, 0
    return 0, v + 4, length


@njit(cache=True, nogil=True)
def _root(b, n, avail, identifier):
    """(problem, root table position) of a size-prefixed flatbuffer held in b (n bytes decoded)."""
    if n < 12:
        return SHORT, 0
    problem = _readable(0, 12, n, avail)
    if problem:
        return problem, 0
    if _u32(b, 0) != n - 4:
        return PREFIX, 0
    for i in range(4):
        if b[8 + i] != identifier[i]:
            return IDENTIFIER, 0
    return 0, 4 + _u32(b, 4)


@njit(cache=True, nogil=True)
def event_packet_problem(b, n):
    """Problem code of the size-prefixed EventPacket flatbuffer of n bytes whose start is in b.

    Checks what dv-processing's unpack reads: size prefix, ``EVTS``, root table, its vtable and
    the ``elements`` vector of 16-byte events. NEED_OUTPUT when b holds too few of the n bytes.
    """
    avail = min(n, len(b))
    problem, t = _root(b, n, avail, _EVTS)
    if problem:
        return problem
    problem, vt, vsize, tsize = _table(b, n, avail, t)
    if problem:
        return problem
    f = _field(b, t, vt, vsize, tsize, 0, 4)
    if f < 0:
        return TABLE
    return _vector(b, n, avail, f, EVENT_BYTES)[0] if f else 0


# ---------------------------------------------------------------------------------------------
# LZ4 frames, walked as LZ4F_decompress (lz4 1.9) decodes them.

@njit(cache=True, nogil=True)
def _lz4_block(src, ip, end, out, op, history, capacity):
    """Walk one LZ4 block src[ip:end] whose output starts at frame offset op.

    Decoded bytes below len(out) are written to out. ``history`` is how far back matches may
    reach (the frame's output so far for linked blocks, the block's start otherwise); capacity
    is the frame's maximum block size. Returns (problem, position in src or new op). Lengths
    are inline loops: a helper returning (length, position) makes the walk twice as slow.
    """
    limit = op + capacity
    kept = len(out)
    while True:
        if ip >= end:
            return LZ4_SEQUENCE, ip
        token = np.int64(src[ip])
        ip += 1
        literals = token >> 4
        if literals == 15:
            while True:
                if ip >= end:
                    return LZ4_SEQUENCE, ip
                extra = np.int64(src[ip])
                ip += 1
                literals += extra
                if extra != 255:
                    break
        # LZ4_decompress_safe: the last sequence is literals only and ends the input exactly
        last = op + literals > limit - 12 or ip + literals > end - 8
        if last and (ip + literals != end or op + literals > limit):
            return LZ4_SEQUENCE, ip
        if op < kept:
            for k in range(min(literals, kept - op)):
                out[op + k] = src[ip + k]
        if last:
            return 0, op + literals
        ip += literals
        op += literals
        offset = _u16(src, ip)
        if offset == 0 or op - offset < history:
            return LZ4_OFFSET, ip
        ip += 2
        length = token & 15
        if length == 15:
            while True:
                if ip >= end - 5:
                    return LZ4_SEQUENCE, ip
                extra = np.int64(src[ip])
                ip += 1
                length += extra
                if extra != 255:
                    break
        length += 4
        if op + length > limit - 5:
            return LZ4_SEQUENCE, ip
        if op < kept:
            for k in range(min(length, kept - op)):
                out[op + k] = out[op + k - offset]
        op += length


@njit(cache=True, nogil=True)
def lz4_frame(src, start, end, out):
    """Walk the LZ4 frame src[start:end] as ``LZ4F_decompress`` would decode it, all of it.

    Writes the first len(out) decoded bytes to out. Returns (0, decoded size) or (problem,
    position in src); (NEED_OUTPUT, decoded size) when a content checksum needs all the output.
    """
    if end - start < 7 or _u32(src, start) != 0x184D2204:
        return LZ4_MAGIC, start
    flags, block_descriptor = np.int64(src[start + 4]), np.int64(src[start + 5])
    block_id = (block_descriptor >> 4) & 7
    if flags >> 6 != 1 or flags & 2 or block_descriptor & 0x8F or block_id < 4:
        return LZ4_DESCRIPTOR, start + 4
    linked, block_sums, has_size, content_sum = not flags & 32, flags & 16, flags & 8, flags & 4
    header_end = start + 6 + (8 if has_size else 0) + (4 if flags & 1 else 0)
    if header_end >= end:
        return LZ4_TRUNCATED, end
    if np.int64(src[header_end]) != (xxh32(src, start + 4, header_end) >> 8) & 0xFF:
        return LZ4_HEADER_SUM, header_end
    capacity = 1 << (2 * block_id + 8)
    ip, op = header_end + 1, 0
    while True:
        if ip + 4 > end:
            return LZ4_TRUNCATED, end
        size = _u32(src, ip)
        if size == 0:
            ip += 4
            break
        stored, size = size >> 31, size & 0x7FFFFFFF
        if size > capacity:
            return LZ4_BLOCK_SIZE, ip
        ip += 4
        block_end = ip + size
        if block_end + (4 if block_sums else 0) > end:
            return LZ4_TRUNCATED, end
        if block_sums and xxh32(src, ip, block_end) != _u32(src, block_end):
            return LZ4_BLOCK_SUM, block_end
        if stored:
            for k in range(max(0, min(size, len(out) - op))):
                out[op + k] = src[ip + k]
            op += size
        else:
            problem, value = _lz4_block(src, ip, block_end, out, op, 0 if linked else op, capacity)
            if problem:
                return problem, value
            op = value
        ip = block_end + (4 if block_sums else 0)
    if has_size and _i64(src, start + 6) != op:
        return LZ4_CONTENT_SIZE, start + 6
    if content_sum:
        if ip + 4 > end:
            return LZ4_TRUNCATED, end
        if op > len(out):
            return NEED_OUTPUT, op
        if xxh32(out, 0, op) != _u32(src, ip):
            return LZ4_CONTENT_SUM, ip
        ip += 4
    if ip != end:
        return LZ4_TRAILING, ip
    return 0, op


@njit(cache=True, nogil=True)
def lz4_event_payload_problem(src, row, head):
    """(problem, file byte) of the LZ4 event payload of ``row`` (header offset, payload offset,
    payload size); head is scratch, decoding it all only when its HEAD_BYTES are not enough."""
    start, end = row[1], row[1] + row[2]
    problem, value = lz4_frame(src, start, end, head)
    if problem == NEED_OUTPUT:
        head = np.empty(value, np.uint8)
        problem, value = lz4_frame(src, start, end, head)
    if problem:
        return problem, value
    problem = event_packet_problem(head, value)
    if problem == NEED_OUTPUT:
        full = np.empty(value, np.uint8)
        lz4_frame(src, start, end, full)
        problem = event_packet_problem(full, value)
    return problem, start


# check_event_payloads status slots, shared between the checking thread and the reader
CHECKED, PROBLEM, AT, BAD_ROW, STOP, READER_CHECKED = range(6)


@njit(cache=True, nogil=True)
def check_event_payloads(src, rows, status):
    """Check LZ4 event payloads in order (rows as ``Container.events``), meant for a thread.

    status[CHECKED]: rows before it are good; the first bad row stops the walk with its problem,
    file byte and row in status[PROBLEM], [AT], [BAD_ROW]. The walk skips the rows the reader
    checked itself (status[READER_CHECKED]) and stops when status[STOP] is set. Each slot is
    written once per row, so the reader can follow it while this runs without the GIL.
    """
    head = np.empty(HEAD_BYTES, np.uint8)
    row = 0
    while row < len(rows) and not status[STOP]:
        row = max(row, status[READER_CHECKED])
        if row == len(rows):
            return
        problem, at = lz4_event_payload_problem(src, rows[row], head)
        if problem:
            status[PROBLEM], status[AT], status[BAD_ROW] = problem, at, row
            return
        status[CHECKED] = row + 1
        row += 1


WALK_PROBLEMS = ("", "packet header names an undeclared stream or a size <= 0",
                 "packet header disagrees with its FileDataTable entry", "packet runs past the FileDataTable",
                 "FileDataTable lists fewer packets than the file holds",
                 "FileDataTable lists more packets than the file holds")


@njit(cache=True, nogil=True)
def _walk_packets(src, start, end, ids, table, entries, rows):
    """Walk the packet headers from start to end: (problem, position, count).

    Each header is int32 stream id (one of ids) and int32 payload size (> 0). With a
    FileDataTable (``table``), packet i must be its entry i (payload offset, stream,
    size) and the packets must end at ``end`` exactly; without, a packet cut by the end of the
    file ends the walk (an interrupted recording). rows gets (header offset, stream, size) when
    big enough. Problems index WALK_PROBLEMS.
    """
    count, position = 0, start
    while position + 8 <= end:
        stream, size = _i32(src, position), _i32(src, position + 4)
        known = False
        for known_id in ids:
            known |= known_id == stream
        if size <= 0 or not known:
            return 1, position, count
        if table:
            if count == len(entries):
                return 4, position, count
            if entries[count, 0] != position + 8 or entries[count, 1] != stream or entries[count, 2] != size:
                return 2, position, count
        if position + 8 + size > end:
            return (3 if table else 0), position, count
        if count < len(rows):
            rows[count, 0], rows[count, 1], rows[count, 2] = position, stream, size
        count += 1
        position += 8 + size
    if table and (position != end or count != len(entries)):
        return (3 if position != end else 5), position, count
    return 0, position, count


@njit(cache=True, nogil=True)
def _data_table_entries(b, n, entries):
    """(problem, count) of the FileDataTable flatbuffer b[:n]; entries gets rows of (ByteOffset,
    stream id, size, TimestampStart) when big enough."""
    problem, t = _root(b, n, n, _FTAB)
    if problem:
        return problem, 0
    problem, vt, vsize, tsize = _table(b, n, n, t)
    if problem:
        return problem, 0
    f = _field(b, t, vt, vsize, tsize, 0, 4)
    if f <= 0:
        return TABLE, 0
    problem, first, count = _vector(b, n, n, f, 4)
    if problem:
        return problem, 0
    for i in range(min(count, len(entries))):
        e = first + 4 * i
        e += _u32(b, e)
        problem, vt, vsize, tsize = _table(b, n, n, e)
        if problem:
            return problem, 0
        fields = (_field(b, e, vt, vsize, tsize, 0, 8), _field(b, e, vt, vsize, tsize, 1, 8),
                  _field(b, e, vt, vsize, tsize, 3, 8))
        if min(fields) < 0:
            return TABLE, 0
        entries[i, 0] = _i64(b, fields[0]) if fields[0] else 0
        entries[i, 1] = _i32(b, fields[1]) if fields[1] else 0
        entries[i, 2] = _i32(b, fields[1] + 4) if fields[1] else 0
        entries[i, 3] = _i64(b, fields[2]) if fields[2] else 0
    return 0, count


@njit(cache=True, nogil=True)
def _io_header_fields(b):
    """(good, compression, dataTablePosition, infoNode start, infoNode length) of the IOHeader
    flatbuffer b (not size-prefixed; absent fields take the schema defaults 0 and -1)."""
    n = len(b)
    if n < 8 or not (b[4:8] == _IOHE).all():
        return False, 0, 0, 0, 0
    t = _u32(b, 0)
    problem, vt, vsize, tsize = _table(b, n, n, t)
    fields = (_field(b, t, vt, vsize, tsize, 0, 4), _field(b, t, vt, vsize, tsize, 1, 8),
              _field(b, t, vt, vsize, tsize, 2, 4))
    if problem or min(fields) < 0 or not fields[2]:
        return False, 0, 0, 0, 0
    problem, text, length = _vector(b, n, n, fields[2], 1)
    if problem or text + length >= n or b[text + length] != 0:  # strings end with a NUL
        return False, 0, 0, 0, 0
    return True, _i32(b, fields[0]) if fields[0] else 0, _i64(b, fields[1]) if fields[1] else -1, text, length


@njit(cache=True, nogil=True)
def _payload_problem(b, n, identifier):
    """Problem code of a decoded payload b[:n]: size prefix, identifier and root table; for
    event packets (``EVTS``) also their event vector."""
    if (identifier == _EVTS).all():
        return event_packet_problem(b, n)
    problem, t = _root(b, n, n, identifier)
    return problem or _table(b, n, n, t)[0]


# ---------------------------------------------------------------------------------------------
# The walk itself.

def read_container(path: str, camera: str = "") -> Container:
    """Check ``path`` as far as dv-processing trusts it, before it is opened with dv-processing.

    ``camera`` selects the event stream as ``MonoCameraRecording`` does (the first camera named
    in the header when empty). Raises FormatError naming the first bad byte structure.
    """
    size = os.path.getsize(path)
    if size < HEADER_START:
        raise FormatError(path, size, f"truncated AEDAT 4.0 header ({size} of at least {HEADER_START} bytes)")
    with open(path, "rb") as handle:
        data = np.frombuffer(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
    if bytes(data[:len(MAGIC)]) != MAGIC:
        raise FormatError(path, 0, f"unsupported AEDAT version line {bytes(data[:len(MAGIC)])!r}")
    compression, table_position, streams = _io_header(path, data)
    first = HEADER_START + int(_u32(data, len(MAGIC)))
    event_stream = _event_stream(streams, camera)
    if table_position < 0:
        # dv-processing rebuilds the table by decoding every packet: check them all now
        packets = _packets(path, data, first, size, streams, None)
        for header, stream, length in packets.tolist():
            _check_payload(path, data, compression, header, length, streams[stream].type)
        chosen = packets[packets[:, 1] == event_stream]
        return Container(path, data, compression, streams, _event_rows(chosen[:, 0], chosen[:, 2]), True)
    if table_position >= size:
        raise FormatError(path, size, f"file ends at byte {size}, before its FileDataTable at byte "
                                      f"{table_position} (truncated)")
    if table_position < first:
        raise FormatError(path, HEADER_START, f"IOHeader puts the FileDataTable at byte {table_position}, "
                                              f"before the first packet at byte {first}")
    entries = _data_table(path, data, compression, table_position, size)
    _packets(path, data, first, table_position, streams, entries)
    chosen = entries[(entries[:, 1] == event_stream) & (entries[:, 3] != -1)]
    rows = _event_rows(chosen[:, 0] - 8, chosen[:, 2])
    if compression in (0, 3, 4):  # stored (cheap) or Zstd (decoded by zstandard): checked now
        for header, _, length in rows.tolist():
            _check_payload(path, data, compression, header, length, "EVTS")
    return Container(path, data, compression, streams, rows, compression in (0, 3, 4))


def _event_rows(headers: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Container.events rows from packet header offsets and payload sizes."""
    return np.stack([headers, headers + 8, sizes], axis=1).astype(np.int64)


def _io_header(path: str, data: np.ndarray) -> tuple[int, int, dict[int, Stream]]:
    """(compression, dataTablePosition, streams by id) from the IOHeader, checked as flatbuffers'
    Verifier checks it (bounds, identifier ``IOHE``, NUL-terminated infoNode)."""
    length = int(_u32(data, len(MAGIC)))
    if HEADER_START + length > len(data):
        raise FormatError(path, len(MAGIC), f"IOHeader size {length} bytes runs past the end of the file "
                                            f"({len(data)} bytes)")
    header = data[HEADER_START:HEADER_START + length]
    good, compression, table_position, text, text_length = _io_header_fields(header)
    if not good:
        raise FormatError(path, HEADER_START, "corrupt AEDAT 4.0 IOHeader flatbuffer")
    if not 0 <= compression < len(COMPRESSIONS):
        raise FormatError(path, HEADER_START, f"unknown AEDAT 4.0 compression {compression} "
                                              f"(known: {', '.join(COMPRESSIONS)})")
    try:
        streams = _streams(bytes(header[text:text + text_length]).decode())
    except (ElementTree.ParseError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(path, HEADER_START, f"AEDAT 4.0 IOHeader stream description is not valid: {exc}") from None
    return compression, table_position, streams


def _streams(xml: str) -> dict[int, Stream]:
    """Streams declared in the infoNode XML (``outInfo/<id>`` nodes), by id."""
    streams = {}
    for node in ElementTree.fromstring(xml).iterfind("node[@name='outInfo']/node"):
        attrs = {attr.get("key"): attr.text or "" for attr in node.iterfind("attr")}
        source = {attr.get("key"): attr.text or "" for attr in node.iterfind("node[@name='info']/attr")}.get("source", "")
        if "originalOutputName" in attrs and "typeIdentifier" in attrs:
            stream = Stream(int(node.get("name")), attrs["originalOutputName"], attrs["typeIdentifier"], source)
            streams[stream.id] = stream
    return streams


def _event_stream(streams: dict[int, Stream], camera: str) -> int:
    """Id of the stream ``MonoCameraRecording(path, camera).getNextEventBatch()`` reads, or -1."""
    ordered = [streams[key] for key in sorted(streams)]
    camera = camera or next((stream.source for stream in ordered if stream.source), "")
    return next((stream.id for stream in ordered
                 if stream.source == camera and stream.name == "events" and stream.type == "EVTS"), -1)


def _packets(path: str, data: np.ndarray, first: int, end: int, streams: dict[int, Stream],
             entries: np.ndarray | None) -> np.ndarray:
    """Walk the packets from ``first`` to ``end``, matching them to the FileDataTable ``entries``
    if any; their (header offset, stream id, payload size) when there is no table."""
    ids = np.array(sorted(streams), np.int64)
    table = entries is not None
    entries = entries if table else np.zeros((0, 4), np.int64)
    problem, position, count = _walk_packets(data, first, end, ids, table, entries, np.zeros((0, 3), np.int64))
    if problem:
        stream, length = int(_i32(data, position)), int(_i32(data, position + 4))
        listed = f"; the table lists stream {entries[count, 1]}, {entries[count, 2]} bytes at byte " \
                 f"{entries[count, 0]}" if problem == 2 else ""
        raise FormatError(path, position, f"corrupt AEDAT 4.0 file: {WALK_PROBLEMS[problem]} (header: stream "
                                          f"{stream}, {length} bytes{listed}; declared streams {sorted(streams)})")
    rows = np.zeros((0 if table else count, 3), np.int64)
    if len(rows):
        _walk_packets(data, first, end, ids, table, entries, rows)
    return rows


def _decode(path: str, data: np.ndarray, compression: int, start: int, end: int, what: str,
            at: int) -> np.ndarray:
    """The decoded bytes of the payload data[start:end]; FormatError at ``at`` when corrupt."""
    if compression == 0:
        return data[start:end]
    if compression in (1, 2):
        problem, value = lz4_frame(data, start, end, np.empty(0, np.uint8))  # value: the decoded size
        if problem in (0, NEED_OUTPUT):
            out = np.empty(value, np.uint8)
            problem, value = lz4_frame(data, start, end, out)
        if problem:
            raise FormatError(path, at, f"corrupt {what}: {PROBLEMS[problem]} (at file byte {value})")
        return out
    import zstandard

    payload = data[start:end].tobytes()
    try:
        size = zstandard.frame_content_size(payload)
        if not 0 <= size < ZSTD_MAX_CONTENT:
            raise zstandard.ZstdError(f"frame content size {size} unknown or too large")
        out = zstandard.ZstdDecompressor().decompress(payload, max_output_size=size)
        if len(out) != size:
            raise zstandard.ZstdError(f"{len(out)} bytes decoded, the frame says {size}")
    except (zstandard.ZstdError, MemoryError) as exc:
        raise FormatError(path, at, f"corrupt {what}: Zstd: {exc}") from None
    return np.frombuffer(out, np.uint8)


def _check_payload(path: str, data: np.ndarray, compression: int, header: int, length: int, type_id: str) -> None:
    """Decode and check the payload of the packet at ``header``; FormatError at the header."""
    decoded = _decode(path, data, compression, header + 8, header + 8 + length,
                      f"AEDAT 4.0 packet ({length}-byte {type_id} payload)", header)
    identifier = np.frombuffer(type_id.encode().ljust(4, b"\0")[:4], np.uint8)
    problem = _payload_problem(decoded, len(decoded), identifier)
    if problem:
        raise payload_error(path, header, length, problem, 0)


def _data_table(path: str, data: np.ndarray, compression: int, position: int, size: int) -> np.ndarray:
    """FileDataTable rows of (ByteOffset, stream id, payload size, TimestampStart)."""
    table = _decode(path, data, compression, position, size, "AEDAT 4.0 FileDataTable", position)
    problem, count = _data_table_entries(table, len(table), np.zeros((0, 4), np.int64))
    if problem:
        raise FormatError(path, position, f"corrupt AEDAT 4.0 FileDataTable: {PROBLEMS[problem]}")
    entries = np.zeros((count, 4), np.int64)
    _data_table_entries(table, len(table), entries)
    return entries
