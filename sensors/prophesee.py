"""Prophesee recordings: RAW EVT 2.0, RAW EVT 3.0 and DAT (CD events), decoded here with numba.

Specs followed: Prophesee "EVT 2.0 format", "EVT 3.0 format" and "DAT file format" pages
(docs.prophesee.ai). A file starts with ``%`` header lines (``% evt 3.0``,
``% format EVT3;height=720;width=1280``, ``% geometry 1280x720``, ``% end``).

- EVT 2.0: 32-bit little-endian words; type in bits 28-31: 0 CD_OFF, 1 CD_ON (6-bit time low,
  11-bit x, 11-bit y), 8 TIME_HIGH (28 bits, units of 64 us), 0xA EXT_TRIGGER, 0xE/0xF skipped.
  A TIME_HIGH that goes backwards by more than half its range is a wrap (+2**34 us) (OpenEB;
  faery also keeps the time from going back, which makes no difference on evt2_sample).
- EVT 3.0: 16-bit words; type in bits 12-15: 0 ADDR_Y, 2 ADDR_X (one event), 3 VECT_BASE_X,
  4 VECT_12 / 5 VECT_8 (bit masks of events from the base x, which then advances), 6 TIME_LOW and
  8 TIME_HIGH (12 bits each), 0xA EXT_TRIGGER, 7/0xE/0xF skipped. The 24-bit time (wrapping every
  16.77 s) follows ``evt3_time``, each mode named after the decoder it reproduces exactly:

  - ``faery`` (the default; faery 0.7.1, ``src/evt/decoder.rs``): the event time never goes back,
    so a TIME_LOW or TIME_HIGH giving an earlier time leaves it as it was (the sensor steps
    TIME_LOW back 3 to 11 us about every ms in evt3_sample). A TIME_HIGH forward by less than
    4094 counts sets the high part and clears the low part; back by 4095 (4095 -> 0) is the wrap
    (+2**24 us); any other TIME_HIGH is ignored. (neuromorphic-drivers' EVT3 adapter, which faery
    follows otherwise, uses 2048 there: from its initial high part 0 that would ignore a first
    TIME_HIGH above 2047, as in every real file here.)
  - ``openeb`` (OpenEB's ``EVT3Decoder``, time shifting off): t = wraps << 24 | high << 12 | low
    exactly as the words say; a TIME_HIGH back by 2048 counts or more is the wrap, a changed
    TIME_HIGH clears the low part. So it runs behind faery by the TIME_LOW steps back.
  - ``expelliarmus`` (expelliarmus 1.1): counts every backward TIME_LOW step as a 4096 us wrap,
    also when a TIME_HIGH already carried it, and every backward TIME_HIGH as a 24-bit wrap. The
    figures in shared/recordings/MANIFEST.md and the ``.npy`` twins were made that way: about
    11 x 4096 us late by the end of both files (evt3_sample's TIME_HIGH only goes 2861 -> 2863,
    8.8 ms, not the MANIFEST's 53.9 ms).

  Events outside the sensor are a FormatError in every mode (faery drops vector bits past the
  right edge and fails on the others; the real files have none).
- DAT: after the header, a byte of event type and a byte of event size (8), then records of
  uint32 t (us) and uint32 data: x bits 0-13, y bits 14-27, polarity bits 28-31.

Trigger words are decoded to ``TRIGGER_DTYPE`` (``read_triggers``, timed as the events) and listed
as a ``triggers`` stream, never mixed with the CD events.
"""

from __future__ import annotations

import functools
import re
from typing import Iterator

import numpy as np
from numba import njit

from sensors.common import (
    SENSORS,
    new_events,
    read_header,
    records,
    sensor_size,
    split_header,
    xyp,
)
from sensors.readers import Format, FormatError, Reader, register_format

TRIGGER_DTYPE = np.dtype([("t", "<i8"), ("id", "<i2"), ("value", "i1")])
CHUNK_EVENTS = 1 << 20  # events per decoded chunk
# EVT 3.0 time semantics, named after the decoder each one reproduces exactly (module docstring)
FAERY, OPENEB, EXPELLIARMUS = 0, 1, 2
EVT3_TIME_MODES = {"faery": FAERY, "openeb": OPENEB, "expelliarmus": EXPELLIARMUS}

# kernel results: words consumed, events written, triggers written, error code
OK, BAD_TYPE, OUTSIDE = 0, 1, 2
PROBLEMS = {BAD_TYPE: "unknown word type", OUTSIDE: "event outside the sensor"}


@njit(cache=True, nogil=True)
def _decode_evt3(words, state, out, trig, width, height, mode):
    """Decode EVT 3.0 words into ``out`` (``new_events`` words, two an event) and trig (t, id,
    value) until one is full (an event word with fewer than 12 event slots left, or a trigger
    word with no slot left).

    ``state`` int64[8] carries over between calls: event time t, time high, time low, 24-bit wraps,
    TIME_LOW wraps (expelliarmus), current y, vector base x, vector polarity.
    """
    t, high, low, wraps, low_wraps, y, base, polarity = (state[0], state[1], state[2], state[3], state[4],
                                                         state[5], state[6], state[7])
    n = nt = 0  # words written to out (two an event), triggers written
    cap = len(out) - 24
    done, error = len(words), OK
    for i in range(len(words)):
        w = np.int64(words[i])
        kind = w >> 12
        if kind == 0x0:
            y = w & 0x7FF
        elif kind == 0x2 or kind == 0x4 or kind == 0x5:
            if n > cap:
                done = i
                break
            if kind == 0x2:
                if (w & 0x7FF) >= width or y >= height:
                    done, error = i, OUTSIDE
                    break
                out[n] = t
                out[n + 1] = xyp(w & 0x7FF, y, (w >> 11) & 1)
                n += 2
                continue
            bits = 12 if kind == 0x4 else 8
            mask = w & ((1 << bits) - 1)
            if y >= height or (base + bits > width and mask >> max(width - base, 0)):
                done, error = i, OUTSIDE
                break
            word = xyp(base, y, polarity)
            for k in range(bits):
                if (mask >> k) & 1:
                    out[n] = t
                    out[n + 1] = word + k
                    n += 2
            base += bits
        elif kind == 0x3:
            base = w & 0x7FF
            polarity = (w >> 11) & 1
        elif kind == 0x6:
            if mode == EXPELLIARMUS and (w & 0xFFF) < low:
                low_wraps += 1
            low = w & 0xFFF
            if mode == FAERY:
                t = max(t, (wraps << 24) + (high << 12) + low)
            else:
                t = (wraps << 24) + ((high + low_wraps) << 12) + low
        elif kind == 0x8:
            value = w & 0xFFF
            if mode == FAERY:  # forward by less than 4094, or back by 4095 (the wrap); else ignored
                if high < value < high + 4094 or high - value > 4094:
                    wraps += value < high
                    high, low = value, 0
                t = max(t, (wraps << 24) + (high << 12) + low)
            else:
                if mode == OPENEB:  # back by 2048 or more is the wrap; a new value clears low
                    wraps += high - value >= 0x800
                    low = low if value == high else 0
                else:  # expelliarmus: every step back is a wrap
                    wraps += value < high
                high = value
                t = (wraps << 24) + ((high + low_wraps) << 12) + low
        elif kind == 0xA:
            if nt == len(trig):
                done = i
                break
            trig[nt, 0] = t
            trig[nt, 1] = (w >> 8) & 0xF
            trig[nt, 2] = w & 1
            nt += 1
        elif kind != 0x7 and kind != 0xE and kind != 0xF:
            done, error = i, BAD_TYPE
            break
    state[0], state[1], state[2], state[3], state[4], state[5], state[6], state[7] = (
        t, high, low, wraps, low_wraps, y, base, polarity)
    return done, n >> 1, nt, error


@njit(cache=True, nogil=True)
def _decode_evt2(words, state, out, trig, width, height, mode):
    """Decode EVT 2.0 words (at most one event or trigger each) until ``out`` or trig is full;
    ``state`` int64[8]: time high (units of 64 us), wrap count. ``mode`` is EVT 3.0's (unused)."""
    high, wraps = state[0], state[1]
    time = (wraps << 34) + (high << 6)
    n = nt = 0  # words written to out (two an event), triggers written
    done, error = min(len(words), len(out) >> 1), OK
    for i in range(done):
        w = np.int64(words[i])
        kind = w >> 28
        if kind <= 0x1:
            ex = (w >> 11) & 0x7FF
            ey = w & 0x7FF
            if ex >= width or ey >= height:
                done, error = i, OUTSIDE
                break
            out[n] = time + ((w >> 22) & 0x3F)
            out[n + 1] = xyp(ex, ey, kind)
            n += 2
        elif kind == 0x8:
            if high - (w & 0xFFFFFFF) > 0x8000000:
                wraps += 1
            high = w & 0xFFFFFFF
            time = (wraps << 34) + (high << 6)
        elif kind == 0xA:
            if nt == len(trig):
                done = i
                break
            trig[nt, 0] = time + ((w >> 22) & 0x3F)
            trig[nt, 1] = (w >> 8) & 0x1F
            trig[nt, 2] = w & 1
            nt += 1
        elif kind != 0xE and kind != 0xF:
            done, error = i, BAD_TYPE
            break
    state[0], state[1] = high, wraps
    return done, n >> 1, nt, error


EVT = {  # name -> (word dtype, kernel, most events one word gives)
    "evt2": (np.dtype("<u4"), _decode_evt2, 1),
    "evt3": (np.dtype("<u2"), _decode_evt3, 12),
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
                 evt3_time: str, triggers: list | None = None,
                 state: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Chunks of canonical events from EVT words starting at byte ``offset`` of ``path``.

    ``state`` (int64[8], see the kernels) carries the decoder over from the words before, for a
    stream that comes in pieces; None starts afresh."""
    word_dtype, kernel, per_word = EVT[name]
    state = np.zeros(8, np.int64) if state is None else state
    trig = np.empty((4096, 3), np.int64)
    pos = 0
    while pos < len(words):
        # a fresh buffer per chunk (chunks are views), no larger than the words left can fill
        out, slots = new_events(min(CHUNK_EVENTS, per_word * (len(words) - pos + 1)))
        done, n, nt, error = kernel(words[pos:], state, slots, trig, width, height,
                                    EVT3_TIME_MODES[evt3_time])
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
             evt3_time: str = "faery") -> Reader:
    """A Prophesee RAW file. ``version`` (evt2/evt3) overrides the header; size as ``resolve_size``."""
    if evt3_time not in EVT3_TIME_MODES:
        raise FormatError(path, None, f"evt3_time must be one of {', '.join(EVT3_TIME_MODES)}, not {evt3_time!r}")
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


@njit(cache=True, nogil=True)
def _decode_dat(raw, out, width, height):
    """DAT records (uint32 pairs t, data) into ``out`` (``new_events`` words); the index of the
    first event outside the sensor, or -1."""
    for i in range(len(raw)):
        data = np.int64(raw[i, 1])
        x, y = data & 0x3FFF, (data >> 14) & 0x3FFF
        if x >= width or y >= height:
            return i
        out[2 * i] = raw[i, 0]
        out[2 * i + 1] = xyp(x, y, np.int64(data >> 28 != 0))
    return -1


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
    offset += 2
    raw = records(path, data, offset, DAT_RECORD).view("<u4").reshape(-1, 2)

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, len(raw), CHUNK_EVENTS):
            part = raw[start:start + CHUNK_EVENTS]
            out, slots = new_events(len(part))
            bad = _decode_dat(part, slots, width, height)
            if bad >= 0:
                data = int(part[bad, 1])
                raise FormatError(path, offset + (start + bad) * DAT_RECORD.itemsize,
                                  f"event x={data & 0x3FFF} y={(data >> 14) & 0x3FFF} outside the "
                                  f"{width}x{height} sensor")
            yield out

    return Reader(path=path, format="prophesee_dat", width=width, height=height, chunks=chunks)


@functools.lru_cache(maxsize=4)
def _head_fields(head: bytes) -> dict[str, str]:
    """Header fields of the first bytes of a file ({} unless it starts with ``%``); cached, as
    the three Prophesee formats' detectors are given the same head in turn (read-only result)."""
    lines, _ = split_header("<head>", head[:head.rfind(b"\n") + 1], b"%", b"% end")
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
