"""jAER AEDAT 2.0 (and 1.0) recordings: ``#`` header lines, then big-endian address/time records.

Spec followed: jAER "AEDAT file formats" (inilabs docs). The first line is ``#!AER-DAT2.0``; header
lines start with ``#`` (an optional ``#!END-HEADER`` ends them). Records are int32 address + int32
timestamp (1 us tick, wrapping at 2**32 us: unwrapped here), both big-endian; AEDAT 1.0 has 16-bit
addresses (DVS128 only). Address layouts:

- ``dvs128``: bit 0 polarity (0 = ON), bits 1-7 x counted from the right (x = 127 - raw), bits
  8-14 y counting upwards.
- ``davis``: bit 31 set for APS/IMU samples and bit 10 set for external (special) events, both
  skipped and listed as streams; otherwise polarity bit 11 (1 = ON), x bits 12-21 counted from
  the right (x = width - 1 - raw), y bits 22-30.

The layout and sensor size come from the ``# AEChip:`` header line when it names a known chip,
else from the ``sensor`` option (``dvs128``, ``davis240``, ``davis346``, ... or ``WxH``).
"""

from __future__ import annotations

import re
from typing import Iterator

import numpy as np

from pipeline.events import EVENT_DTYPE
from sensors.common import check_bounds, read_header, records, sensor_size
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


def unwrap(t: np.ndarray, state: list[int]) -> np.ndarray:
    """uint32 microsecond timestamps to int64, adding 2**32 at each wrap; ``state`` = [last, wraps]."""
    t = t.astype(np.int64)
    back = np.diff(t, prepend=state[0] if state[0] >= 0 else t[:1]) < -(1 << 31)
    wraps = np.cumsum(back) + state[1]
    state[0], state[1] = int(t[-1]), int(wraps[-1])
    return t + (wraps << 32)


def decode(raw: np.ndarray, layout: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical events of the DVS records in ``raw`` and the index of each in ``raw``."""
    a = raw["a"].astype(np.uint32)
    if layout == "dvs128":
        keep = np.arange(len(a))
        x, y, p = 127 - ((a >> 1) & 0x7F), (a >> 8) & 0x7F, 1 - (a & 1)
    else:
        keep = np.flatnonzero(((a >> 31) == 0) & (((a >> 10) & 1) == 0))
        a = a[keep]
        x, y, p = width - 1 - ((a >> 12) & 0x3FF).astype(np.int64), (a >> 22) & 0x1FF, (a >> 11) & 1
    out = np.empty(len(keep), EVENT_DTYPE)
    out["x"], out["y"], out["p"] = x, y, p
    return out, keep


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
    streams = ["aps_imu", "special"] if layout == "davis" and len(raw) and (
        (raw["a"].astype(np.uint32) & 0x80000400) != 0).any() else []

    def chunks() -> Iterator[np.ndarray]:
        state = [-1, 0]
        for start in range(0, len(raw), CHUNK):
            part = raw[start:start + CHUNK]
            events, index = decode(part, layout, width)
            if not len(events):
                continue
            events["t"] = unwrap(part["t"][index], state)
            check_bounds(path, events, width, height, lambda i: offset + (start + index[i]) * size)
            yield events

    return Reader(path=path, format="aedat2", width=width, height=height, chunks=chunks,
                  streams=streams)


def _detect(path: str, head: bytes) -> bool:
    return head.startswith(MAGIC) and not head.startswith(b"#!AER-DAT3") and not head.startswith(
        b"#!AER-DAT4")


register_format(Format("aedat2", _detect, open_jaer, (".aedat", ".dat")))
