"""jAER AEDAT 2.0 (and 1.0) recordings: ``#`` header lines, then big-endian address/time records.

Spec followed: jAER "AEDAT file formats" (inilabs docs). The first line is ``#!AER-DAT2.0``; header
lines start with ``#`` (an optional ``#!END-HEADER`` ends them). Records are int32 address + int32
timestamp (1 us tick, wrapping at 2**32 us: unwrapped here), both big-endian; AEDAT 1.0 has 16-bit
addresses (DVS128 only). Address layouts:

- ``dvs128``: bit 0 polarity (0 = ON), bits 1-7 x counted from the right (x = 127 - raw), bits
  8-14 y counted from the bottom (y = 127 - raw).
- ``davis``: bit 31 set for APS/IMU samples and bit 10 set for external (special) events, both
  skipped and listed as streams; otherwise polarity bit 11 (1 = ON), x bits 12-21 counted from
  the right (x = width - 1 - raw), y bits 22-30 counted from the bottom (y = height - 1 - raw).

jAER's extractors keep y as stored (its display puts the origin at the bottom left); evpipe puts
the origin at the top left, as AEDAT 4.0, Prophesee and Event Stream data, so y is flipped here,
as ``tonic.io.read_davis_346`` does.

One numba pass (``_decode``) swaps the bytes, decodes the layout, skips APS/IMU/special records,
unwraps the DVS events' timestamps and stops at the first event outside the sensor.

The layout and sensor size come from the ``# AEChip:`` header line when it names a known chip,
else from the ``sensor`` option (``dvs128``, ``davis240``, ``davis346``, ... or ``WxH``).
"""

from __future__ import annotations

import re
from typing import Iterator

import numpy as np
from numba import njit

from sensors.common import new_events, read_header, records, sensor_size, xyp
from sensors.readers import Format, FormatError, Reader, register_format

MAGIC = b"#!AER-DAT"
CHUNK = 1 << 20
RECORDS = {"1.0": np.dtype([("a", ">u2"), ("t", ">u4")]), "2.0": np.dtype([("a", ">u4"), ("t", ">u4")])}
CHIPS = (("dvs128", "dvs128"), ("davis346", "davis346"), ("davis240", "davis240"),
         ("davis640", "davis640"))  # AEChip class name fragment -> sensor name


def chip_sensor(lines: list[str]) -> str:
    """Sensor name from the ``AEChip:`` header line, or "" when none is recognised."""
    for line in lines:
        if line.lower().startswith("aechip:"):
            chip = line.lower()
            return next((sensor for key, sensor in CHIPS if key in chip), "")
    return ""


@njit(cache=True, nogil=True)
def _big_endian(word):
    """A uint32 read little-endian, as the big-endian value it holds."""
    word = np.int64(word)
    return ((word & 0xFF) << 24) | ((word & 0xFF00) << 8) | ((word >> 8) & 0xFF00) | (word >> 24)


@njit(cache=True, nogil=True)
def _decode(words, davis, width, height, state, out):
    """AEDAT 2.0 records (``words``: uint32 pairs address, timestamp, big-endian) into ``out``
    (``new_events`` words).

    ``state`` int64[2] carries over between calls: the last raw timestamp (-1 before any) and the
    2**32 us wraps so far (a timestamp below the last by more than 2**31). Returns the events
    written and the index of the first record outside the sensor (its x, y left in the next
    slot), or -1.
    """
    last, wraps = state[0], state[1]
    n = 0
    for i in range(len(words)):
        a, t = _big_endian(words[i, 0]), _big_endian(words[i, 1])
        if davis:
            if a & 0x80000400:  # APS/IMU sample or external (special) event
                continue
            x, y, p = width - 1 - ((a >> 12) & 0x3FF), height - 1 - ((a >> 22) & 0x1FF), (a >> 11) & 1
        else:
            x, y, p = 127 - ((a >> 1) & 0x7F), 127 - ((a >> 8) & 0x7F), 1 - (a & 1)
        out[2 * n + 1] = xyp(x, y, p)
        if x < 0 or x >= width or y < 0 or y >= height:
            state[0], state[1] = last, wraps
            return n, i
        if last >= 0 and t - last < -(1 << 31):
            wraps += 1
        last = t
        out[2 * n] = t + (wraps << 32)
        n += 1
    state[0], state[1] = last, wraps
    return n, -1


def open_jaer(path: str, sensor: str = "", width: int = 0, height: int = 0, layout: str = "") -> Reader:
    """An AEDAT 1.0/2.0 file; ``sensor``/``layout`` override what the header says."""
    lines, offset, data = read_header(path, b"#", b"#!END-HEADER")
    version = re.match(r"!AER-DAT(\d+\.\d+)", lines[0]).group(1) if lines and re.match(
        r"!AER-DAT\d+\.\d+", lines[0]) else ""
    if version not in RECORDS:
        raise FormatError(path, 0, f"unsupported AEDAT version {version or 'unstated'!r} "
                                   f"(this reader: 1.0, 2.0)")
    sensor = sensor or chip_sensor(lines)
    if not sensor and not (width and height):
        raise FormatError(path, 0, "the header names no known AEChip; pass --sensor (dvs128, "
                                   "davis240, davis346 or WxH)")
    if not (width and height):
        width, height = sensor_size(sensor, path)
    layout = layout or ("dvs128" if (width, height) == (128, 128) else "davis")
    if layout not in ("dvs128", "davis") or (layout == "davis" and version == "1.0"):
        raise FormatError(path, None, f"unsupported address layout {layout!r} for AEDAT {version}")
    raw = records(path, data, offset, RECORDS[version])
    size = RECORDS[version].itemsize
    streams = ["aps_imu", "special"] if layout == "davis" and (raw["a"] & 0x80000400).any() else []
    if version == "1.0":  # 16-bit addresses widened: one record layout for the decoder
        raw = raw.astype(RECORDS["2.0"])
    words = raw.view("<u4").reshape(-1, 2)

    def chunks() -> Iterator[np.ndarray]:
        state = np.array([-1, 0], np.int64)
        for start in range(0, len(words), CHUNK):
            part = words[start:start + CHUNK]
            events, slots = new_events(len(part))
            n, bad = _decode(part, layout == "davis", width, height, state, slots)
            if bad >= 0:
                raise FormatError(path, offset + (start + bad) * size, f"event x={events['x'][n]} "
                                  f"y={events['y'][n]} outside the {width}x{height} sensor")
            if n:
                yield events[:n]

    return Reader(path=path, format="aedat2", width=width, height=height, chunks=chunks,
                  streams=streams)


def _detect(path: str, head: bytes) -> bool:
    return head.startswith(MAGIC) and not head.startswith(b"#!AER-DAT3") and not head.startswith(
        b"#!AER-DAT4")


register_format(Format("aedat2", _detect, open_jaer, (".aedat", ".dat")))
