"""Prophesee recordings: RAW EVT 2.0, RAW EVT 3.0 and DAT (CD events), decoded here with numba.

Specs followed: Prophesee "EVT 2.0 format", "EVT 3.0 format" and "DAT file format" pages
(docs.prophesee.ai), with OpenEB's decoder semantics. A file starts with ``%`` header lines
(``% evt 3.0``, ``% format EVT3;height=720;width=1280``, ``% geometry 1280x720``, ``% end``).

- EVT 2.0: 32-bit little-endian words; type in bits 28-31: 0 CD_OFF, 1 CD_ON (6-bit time low,
  11-bit x, 11-bit y), 8 TIME_HIGH (28 bits, units of 64 us), 0xA EXT_TRIGGER, 0xE/0xF skipped.
  A TIME_HIGH that goes backwards by more than half its range is a wrap (+2**34 us).
- EVT 3.0: 16-bit words; type in bits 12-15: 0 ADDR_Y, 2 ADDR_X (one event), 3 VECT_BASE_X,
  4 VECT_12 / 5 VECT_8 (bit masks of events from the base x, which then advances), 6 TIME_LOW and
  8 TIME_HIGH (12 bits each: t = high << 12 | low), 0xA EXT_TRIGGER, 7/0xE/0xF skipped. TIME_HIGH
  going backwards by more than half its range is the 24-bit wrap (every 16.77 s, +2**24 us); a
  TIME_LOW that steps back a little (the sensor's own reordering) is kept as it is, so a replay's
  timestamp policy decides what to do with it.
- DAT: after the header, a byte of event type and a byte of event size (8), then records of
  uint32 t (us) and uint32 data: x bits 0-13, y bits 14-27, polarity bits 28-31.

Trigger words are decoded to ``TRIGGER_DTYPE`` (``read_triggers``) and listed as a ``triggers``
stream, never mixed with the CD events. ``evt3_time="expelliarmus"`` reproduces expelliarmus 1.1
instead, which also counts every backward TIME_LOW step as a 4096 us wrap (the figures in
shared/recordings/MANIFEST.md and the ``.npy`` twins were made that way).
"""

from __future__ import annotations

import re
from typing import Iterator

import numpy as np
from numba import njit

from pipeline.events import EVENT_DTYPE
from sensors.common import SENSORS, check_bounds, read_header, records, sensor_size
from sensors.readers import Format, FormatError, Reader, register_format

TRIGGER_DTYPE = np.dtype([("t", "<i8"), ("id", "<i2"), ("value", "i1")])
CHUNK_EVENTS = 1 << 20  # events per decoded chunk
EVT3_TIME_MODES = ("spec", "expelliarmus")

# kernel results: words consumed, events written, triggers written, error code
OK, BAD_TYPE, OUTSIDE = 0, 1, 2
PROBLEMS = {BAD_TYPE: "unknown word type", OUTSIDE: "event outside the sensor"}


@njit(cache=True, nogil=True)
def _decode_evt3(words, state, t, x, y, p, trig, width, height, expelliarmus):
    """Decode EVT 3.0 words into t/x/y/p and trig (t, id, value) until a buffer is full.

    ``state`` int64[7]: time high, time low, wrap count (24-bit), low-wrap count (expelliarmus
    mode only), current y, vector base x, vector polarity; it carries over between calls.
    """
    n = 0
    nt = 0
    cap = len(t) - 12
    for i in range(len(words)):
        if n > cap or nt >= len(trig):
            return i, n, nt, OK
        w = np.int64(words[i])
        kind = w >> 12
        if kind == 0x0:
            state[4] = w & 0x7FF
        elif kind == 0x2 or kind == 0x4 or kind == 0x5:
            if state[4] >= height:
                return i, n, nt, OUTSIDE
            now = (state[2] << 24) + ((state[0] + state[3]) << 12) + state[1]
            if kind == 0x2:
                if (w & 0x7FF) >= width:
                    return i, n, nt, OUTSIDE
                t[n] = now
                x[n] = w & 0x7FF
                y[n] = state[4]
                p[n] = (w >> 11) & 1
                n += 1
            else:
                bits = 12 if kind == 0x4 else 8
                for k in range(bits):
                    if (w >> k) & 1:
                        if state[5] + k >= width:
                            return i, n, nt, OUTSIDE
                        t[n] = now
                        x[n] = state[5] + k
                        y[n] = state[4]
                        p[n] = state[6]
                        n += 1
                state[5] += bits
        elif kind == 0x3:
            state[5] = w & 0x7FF
            state[6] = (w >> 11) & 1
        elif kind == 0x6:
            low = w & 0xFFF
            if expelliarmus and low < state[1]:
                state[3] += 1
            state[1] = low
        elif kind == 0x8:
            high = w & 0xFFF
            if (expelliarmus and high < state[0]) or state[0] - high > 0x800:
                state[2] += 1
            state[0] = high
        elif kind == 0xA:
            trig[nt, 0] = (state[2] << 24) + ((state[0] + state[3]) << 12) + state[1]
            trig[nt, 1] = (w >> 8) & 0xF
            trig[nt, 2] = w & 1
            nt += 1
        elif kind != 0x7 and kind != 0xE and kind != 0xF:
            return i, n, nt, BAD_TYPE
    return len(words), n, nt, OK


@njit(cache=True, nogil=True)
def _decode_evt2(words, state, t, x, y, p, trig, width, height, expelliarmus):
    """Decode EVT 2.0 words; ``state`` int64[7]: time high (units of 64 us), wrap count."""
    n = 0
    nt = 0
    cap = len(t) - 1
    for i in range(len(words)):
        if n > cap or nt >= len(trig):
            return i, n, nt, OK
        w = np.int64(words[i])
        kind = w >> 28
        if kind == 0x0 or kind == 0x1:
            ex = (w >> 11) & 0x7FF
            ey = w & 0x7FF
            if ex >= width or ey >= height:
                return i, n, nt, OUTSIDE
            t[n] = (state[1] << 34) + (state[0] << 6) + ((w >> 22) & 0x3F)
            x[n] = ex
            y[n] = ey
            p[n] = kind
            n += 1
        elif kind == 0x8:
            high = w & 0xFFFFFFF
            if state[0] - high > 0x8000000:
                state[1] += 1
            state[0] = high
        elif kind == 0xA:
            trig[nt, 0] = (state[1] << 34) + (state[0] << 6) + ((w >> 22) & 0x3F)
            trig[nt, 1] = (w >> 8) & 0x1F
            trig[nt, 2] = w & 1
            nt += 1
        elif kind != 0xE and kind != 0xF:
            return i, n, nt, BAD_TYPE
    return len(words), n, nt, OK


EVT = {  # name -> (word dtype, kernel)
    "evt2": (np.dtype("<u4"), _decode_evt2),
    "evt3": (np.dtype("<u2"), _decode_evt3),
}


def header_fields(lines: list[str]) -> dict[str, str]:
    """``key value`` header lines as a dict, with ``format`` lines split into their ``k=v`` parts."""
    fields = {}
    for line in lines:
        key, _, value = line.partition(" ")
        fields[key.lower()] = value.strip()
        if key.lower() == "format":
            name, *parts = value.split(";")
            fields["format_name"] = name.strip().lower()
            fields.update(part.strip().lower().split("=", 1) for part in parts if "=" in part)
    return fields


def header_size(fields: dict[str, str]) -> tuple[int, int] | None:
    """Sensor (width, height) stated by the header: format, geometry, Width/Height or plugin."""
    if "width" in fields and "height" in fields:
        try:
            return int(fields["width"]), int(fields["height"])
        except ValueError:
            return None
    match = re.match(r"(\d+)x(\d+)", fields.get("geometry", ""))
    if match:
        return int(match.group(1)), int(match.group(2))
    plugin = fields.get("plugin_name", "")
    for name in sorted(SENSORS, key=len, reverse=True):
        if f"_{name}_" in f"_{plugin}_" or f"_{name}" in plugin:
            return SENSORS[name]
    return None


def evt_version(fields: dict[str, str]) -> str:
    """``evt2``, ``evt3`` (or another stated encoding) from ``% evt 3.0`` or ``% format EVT3``."""
    if "format_name" in fields:
        return fields["format_name"]
    stated = fields.get("evt", "")
    return "evt" + (stated[:-2] if stated.endswith(".0") else stated)


def resolve_size(path: str, stated, sensor: str, width: int, height: int, default) -> tuple[int, int]:
    """Sensor size: explicit width/height, then ``sensor``, then the header, then ``default``."""
    if width and height:
        return width, height
    if sensor:
        return sensor_size(sensor, path)
    return stated or default


def decode_words(path: str, name: str, words: np.ndarray, offset: int, width: int, height: int,
                 evt3_time: str, triggers: list | None = None) -> Iterator[np.ndarray]:
    """Chunks of canonical events from EVT words starting at byte ``offset`` of ``path``."""
    word_dtype, kernel = EVT[name]
    state = np.zeros(7, np.int64)
    trig = np.empty((4096, 3), np.int64)
    pos = 0
    while pos < len(words):
        out = np.empty(CHUNK_EVENTS, EVENT_DTYPE)  # a fresh buffer per chunk: chunks are views
        done, n, nt, error = kernel(words[pos:], state, out["t"], out["x"], out["y"], out["p"], trig,
                                    width, height, evt3_time == "expelliarmus")
        if error:
            at = pos + done
            raise FormatError(path, offset + at * word_dtype.itemsize,
                              f"{PROBLEMS[error]} in {name.upper()} word 0x{int(words[at]):0{word_dtype.itemsize * 2}x}"
                              f" (sensor {width}x{height})")
        if nt and triggers is not None:
            found = np.empty(nt, TRIGGER_DTYPE)
            found["t"], found["id"], found["value"] = trig[:nt, 0], trig[:nt, 1], trig[:nt, 2]
            triggers.append(found)
        pos += done
        if n:
            yield out[:n]


def open_raw(path: str, version: str = "", sensor: str = "", width: int = 0, height: int = 0,
             evt3_time: str = "spec") -> Reader:
    """A Prophesee RAW file. ``version`` (evt2/evt3) overrides the header; size as ``resolve_size``."""
    if evt3_time not in EVT3_TIME_MODES:
        raise FormatError(path, None, f"evt3_time must be one of {EVT3_TIME_MODES}, not {evt3_time!r}")
    lines, offset, data = read_header(path, b"%", b"% end")
    fields = header_fields(lines)
    stated = evt_version(fields)
    name = version or stated
    if name not in EVT:
        raise FormatError(path, 0, f"unsupported Prophesee RAW encoding {name!r} "
                                   f"(supported: EVT 2.0, EVT 3.0)")
    if version and stated not in ("evt", version):
        raise FormatError(path, 0, f"the header says {stated.upper()}, not {version.upper()}")
    width, height = resolve_size(path, header_size(fields), sensor, width, height,
                                 (640, 480) if name == "evt2" else (1280, 720))
    words = records(path, data, offset, EVT[name][0])
    streams: list[str] = []
    triggers: list[np.ndarray] = []

    def chunks() -> Iterator[np.ndarray]:
        triggers.clear()
        yield from decode_words(path, name, words, offset, width, height, evt3_time, triggers)
        if triggers and "triggers" not in streams:
            streams.append("triggers")

    reader = Reader(path=path, format=f"prophesee_{name}", width=width, height=height,
                    chunks=chunks, streams=streams)
    reader.triggers = triggers  # filled while decoding (external trigger words)
    return reader


def read_triggers(path: str, **options) -> np.ndarray:
    """All external trigger words of a RAW file as ``TRIGGER_DTYPE`` records."""
    reader = open_raw(path, **options)
    for _ in reader.chunks():
        pass
    return np.concatenate(reader.triggers) if reader.triggers else np.empty(0, TRIGGER_DTYPE)


DAT_RECORD = np.dtype([("t", "<u4"), ("data", "<u4")])
DAT_TYPES = {0x00: "2d", 0x0C: "cd"}


def open_dat(path: str, sensor: str = "", width: int = 0, height: int = 0) -> Reader:
    """A Prophesee DAT file of TD/CD events; size from the header, ``sensor`` or 304x240 (ATIS)."""
    lines, offset, data = read_header(path, b"%")
    fields = header_fields(lines)
    if fields.get("version", "2") != "2":
        raise FormatError(path, 0, f"unsupported DAT version {fields['version']!r} (supported: 2)")
    if len(data) < offset + 2:
        raise FormatError(path, len(data), "DAT file ends before its event type and size bytes")
    kind, size = int(data[offset]), int(data[offset + 1])
    if kind not in DAT_TYPES or size != DAT_RECORD.itemsize:
        raise FormatError(path, offset, f"unsupported DAT event type 0x{kind:02x} / size {size} "
                                        f"(supported: 2d or cd events of 8 bytes)")
    width, height = resolve_size(path, header_size(fields), sensor, width, height, SENSORS["atis"])
    raw = records(path, data, offset + 2, DAT_RECORD)

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, len(raw), CHUNK_EVENTS):
            part = raw[start:start + CHUNK_EVENTS]
            out = np.empty(len(part), EVENT_DTYPE)
            out["t"] = part["t"]
            out["x"] = part["data"] & 0x3FFF
            out["y"] = (part["data"] >> 14) & 0x3FFF
            out["p"] = (part["data"] >> 28) != 0
            check_bounds(path, out, width, height,
                         lambda i: offset + 2 + (start + i) * DAT_RECORD.itemsize)
            yield out

    return Reader(path=path, format="prophesee_dat", width=width, height=height, chunks=chunks)


def _head_fields(head: bytes) -> dict[str, str]:
    """Header fields of the first bytes of a file ({} unless it starts with ``%``)."""
    if not head.startswith(b"%"):
        return {}
    lines = [line[1:].strip() for line in head.decode("latin-1").splitlines() if line.startswith("%")]
    return header_fields(lines)


def _raw_format(name: str) -> Format:
    def detect(path: str, head: bytes) -> bool:
        return evt_version(_head_fields(head)) == name

    def open_version(path: str, **options) -> Reader:
        return open_raw(path, **{"version": name, **options})

    return Format(f"prophesee_{name}", detect, open_version, (".raw",))


def _detect_dat(path: str, head: bytes) -> bool:
    fields = _head_fields(head)
    return bool(fields) and evt_version(fields) == "evt" and (
        "version" in fields or any("Event2d" in v or "EventCD" in v for v in fields.values()))


for _name in EVT:
    register_format(_raw_format(_name))
register_format(Format("prophesee_dat", _detect_dat, open_dat, (".dat",)))
