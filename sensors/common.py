"""Helpers shared by the binary readers: text header lines, raw records, sensor names.

Binary event files (jAER AEDAT 2.0, Prophesee RAW and DAT) start with text lines that begin with
a marker byte (``#`` or ``%``) followed by fixed-size binary records. ``split_header`` finds where
the records start; ``records`` maps them without copying and names the file and byte offset when
the data length is not a whole number of records. The numba decoders write canonical events
through ``new_events`` and ``xyp``.
"""

from __future__ import annotations

import functools
import re

import numpy as np
from numba import njit

from pipeline.core.events import EVENT_DTYPE
from sensors.readers import FormatError

# Sensor sizes (width, height) by the names that appear in file headers and on the command line.
SENSORS = {
    "dvs128": (128, 128),
    "davis240": (240, 180),
    "davis346": (346, 260),
    "davis640": (640, 480),
    "dvxplorer": (640, 480),
    "dvxplorer_lite": (320, 240),
    "atis": (304, 240),
    "gen3": (640, 480),
    "gen31": (640, 480),
    "gen41": (1280, 720),
    "imx636": (1280, 720),
    "nmnist": (34, 34),
}


def sensor_size(name: str, path="<sensor>") -> tuple[int, int]:
    """(width, height) of a sensor named as in SENSORS, or given as ``WxH``."""
    key = name.strip().lower()
    if key in SENSORS:
        return SENSORS[key]
    match = re.fullmatch(r"(\d+)x(\d+)", key)
    if match and int(match.group(1)) and int(match.group(2)):
        return int(match.group(1)), int(match.group(2))
    raise FormatError(path, None, f"unknown sensor {name!r}; use WxH (W, H >= 1 px) or one of "
                                  f"{', '.join(SENSORS)}")


@functools.cache
def header_patterns(marker: bytes, end_line: bytes | None) -> tuple[re.Pattern, re.Pattern | None]:
    """Compiled: the run of whole lines starting with ``marker``; a line equal to ``end_line``."""
    return (re.compile(rb"(?:%s[^\n]*\n)*" % re.escape(marker)),
            None if end_line is None else re.compile(rb"^%s\r*\n" % re.escape(end_line), re.M))


def split_header(path: str, data: bytes, marker: bytes,
                 end_line: bytes | None = None) -> tuple[list[str], int]:
    """Header lines (marker and line ending removed) and the offset of the first data byte.

    Lines start with ``marker``; the header ends at the first line that does not, or right after
    a line equal to ``end_line`` when given.
    """
    lines_pattern, end_pattern = header_patterns(marker, end_line)
    block = lines_pattern.match(data).group()
    end = end_pattern.search(block) if end_pattern else None
    if end:
        block = block[:end.end()]
    elif data[len(block):len(block) + len(marker)] == marker:
        raise FormatError(path, len(block), "header line without end")
    lines = block.decode("latin-1").split("\n")[:-1]
    return [line[len(marker):].strip() for line in lines], len(block)


def read_header(path: str, marker: bytes, end_line: bytes | None = None) -> tuple[list[str], int, np.ndarray]:
    """``split_header`` over the file at ``path``, plus the whole file as a read-only byte array."""
    with open(path, "rb", buffering=0) as handle:
        data = handle.readall()
    lines, offset = split_header(path, data, marker, end_line)
    return lines, offset, np.frombuffer(data, np.uint8)


def records(path: str, data: np.ndarray, offset: int, dtype: np.dtype) -> np.ndarray:
    """The records of ``dtype`` from ``offset`` on; FormatError at a trailing partial record."""
    dtype = np.dtype(dtype)
    body = data[offset:]
    extra = len(body) % dtype.itemsize
    if extra:
        whole = offset + len(body) - extra
        raise FormatError(path, whole, f"truncated record: {extra} trailing bytes, records are "
                                       f"{dtype.itemsize} bytes")
    return body.view(dtype)


def check_bounds(path: str, events: np.ndarray, width: int, height: int, offsets) -> None:
    """FormatError at the first event outside the sensor (``offsets(i)``: its byte offset or None)."""
    if not len(events):
        return
    bad = (events["x"] < 0) | (events["x"] >= width) | (events["y"] < 0) | (events["y"] >= height)
    if bad.any():
        i = int(np.argmax(bad))
        where = offsets(i)
        raise FormatError(path, None if where is None else int(where), f"event x={events['x'][i]} y={events['y'][i]} "
                                                 f"outside the {width}x{height} sensor")


def new_events(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uninitialised canonical events and their flat int64 view for the numba decoders.

    Event ``i`` is words ``2 i`` (t) and ``2 i + 1`` (``xyp(x, y, p)``): EVENT_DTYPE puts x, y, p
    at byte offsets 8, 10, 12, little-endian (a big-endian host gets a non-native view, which
    numba refuses). One flat index per word keeps the decoders' stores cheap.
    """
    events = np.empty(n, EVENT_DTYPE)
    return events, events.view("<i8")


@njit(cache=True, nogil=True)
def xyp(x, y, p):
    """The second word of a canonical event (``new_events``): x, y (int16) and p (int8), padding 0."""
    return (x & 0xFFFF) | ((y & 0xFFFF) << 16) | (p << 32)
