"""Helpers shared by the binary readers: text header lines, raw records, sensor names.

Binary event files (jAER AEDAT 2.0, Prophesee RAW and DAT) start with text lines that begin with
a marker byte (``#`` or ``%``) followed by fixed-size binary records. ``split_header`` finds where
the records start; ``records`` maps them without copying and names the file and byte offset when
the data length is not a whole number of records.
"""

from __future__ import annotations

import re

import numpy as np

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
    if match:
        return int(match.group(1)), int(match.group(2))
    raise FormatError(path, None, f"unknown sensor {name!r}; use WxH or one of {', '.join(SENSORS)}")


def split_header(path: str, data: bytes | np.ndarray, marker: bytes,
                 end_line: bytes | None = None) -> tuple[list[str], int]:
    """Header lines (marker and line ending removed) and the offset of the first data byte.

    Lines start with ``marker``; the header ends at the first line that does not, or right after
    a line equal to ``end_line`` when given.
    """
    data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    lines, offset, n = [], 0, len(data)
    while offset < n and data[offset] == marker[0]:
        newline = bytes(data[offset:offset + 65536]).find(b"\n")
        if newline < 0:
            raise FormatError(path, offset, "header line without end")
        raw = bytes(data[offset:offset + newline + 1])
        offset += newline + 1
        text = raw.decode("latin-1").rstrip("\r\n")
        lines.append(text[len(marker):].strip())
        if end_line is not None and raw.rstrip(b"\r\n") == end_line:
            break
    return lines, offset


def read_header(path: str, marker: bytes, end_line: bytes | None = None) -> tuple[list[str], int, np.ndarray]:
    """``split_header`` over the file at ``path``, plus the whole file as a read-only byte array."""
    data = np.fromfile(path, dtype=np.uint8)
    lines, offset = split_header(path, data, marker, end_line)
    return lines, offset, data


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
