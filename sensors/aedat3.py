"""AEDAT 3.1 recordings (cAER): ``#`` header lines ending with ``#!END-HEADER``, then packets.

Spec followed: iniVation "AEDAT 3.1" format page. Each packet is a 28-byte little-endian header
(int16 type, int16 source, int32 event size, int32 timestamp offset in the event, int32 timestamp
overflow, int32 capacity, int32 number, int32 valid) followed by ``number * size`` bytes. Polarity
packets (type 1) hold 8-byte events: uint32 data (bit 0 valid, bit 1 polarity with 1 = ON, y bits
2-16, x bits 17-31) and int32 timestamp; t = overflow << 31 | timestamp (us). Invalid events are
dropped; other packet types (special, frame, IMU...) are skipped and listed as streams.

The sensor size comes from ``sizeX``/``sizeY`` in the header, else a known source name
(``#Source 1: DVS128``), else the ``sensor`` option.
"""

from __future__ import annotations

import re
from typing import Iterator

import numpy as np

from pipeline.core.events import EVENT_DTYPE
from pipeline.core.files import open_for_writing
from sensors.common import SENSORS, check_bounds, read_header, sensor_size
from sensors.readers import Format, FormatError, Reader, register_format

MAGIC = b"#!AER-DAT3.1"
PACKET_HEADER = np.dtype([("type", "<i2"), ("source", "<i2"), ("size", "<i4"), ("ts_offset", "<i4"),
                          ("ts_overflow", "<i4"), ("capacity", "<i4"), ("number", "<i4"),
                          ("valid", "<i4")])
POLARITY_EVENT = np.dtype([("data", "<u4"), ("t", "<i4")])
TYPES = {0: "special", 1: "polarity", 2: "frames", 3: "imu6", 4: "imu9", 5: "sample", 6: "ear",
         7: "config", 8: "point1d", 9: "point2d"}
PACKET_EVENTS = 8192  # events per packet written


def header_size(path: str, lines: list[str], sensor: str) -> tuple[int, int]:
    """Sensor size from ``sensor``, else ``sizeX``/``sizeY`` or a source name in the header."""
    if sensor:
        return sensor_size(sensor, path)
    text = "\n".join(lines)
    sx, sy = re.search(r"sizeX\D{0,20}?(\d+)", text), re.search(r"sizeY\D{0,20}?(\d+)", text)
    if sx and sy:
        return int(sx.group(1)), int(sy.group(1))
    for line in lines:
        match = re.match(r"Source \d+:\s*(.+)", line)
        key = match.group(1).strip().lower().replace(" ", "_") if match else ""
        if key in SENSORS:
            return SENSORS[key]
    raise FormatError(path, 0, "the header states no sensor size; pass --sensor (name or WxH)")


def packets(path: str, data: np.ndarray, offset: int) -> Iterator[tuple[int, np.void]]:
    """(byte offset of the events, packet header) for every packet; FormatError when cut short."""
    end = len(data)
    while offset < end:
        if end - offset < PACKET_HEADER.itemsize:
            raise FormatError(path, offset, f"truncated packet header ({end - offset} of "
                                            f"{PACKET_HEADER.itemsize} bytes)")
        head = data[offset:offset + PACKET_HEADER.itemsize].view(PACKET_HEADER)[0]
        size, number = int(head["size"]), int(head["number"])
        if size <= 0 or number < 0 or not 0 <= head["ts_offset"] <= size - 4 or (
                head["type"] == 1 and size != POLARITY_EVENT.itemsize):
            raise FormatError(path, offset, f"corrupt packet header (type {head['type']}, event size "
                                            f"{size}, timestamp offset {head['ts_offset']}, {number} events)")
        start = offset + PACKET_HEADER.itemsize
        if end - start < size * number:
            raise FormatError(path, offset, f"truncated packet: {number} events of {size} bytes, "
                                            f"{end - start} bytes left")
        yield start, head
        offset = start + size * number


def open_aedat3(path: str, sensor: str = "", width: int = 0, height: int = 0) -> Reader:
    """An AEDAT 3.1 file; polarity events only."""
    lines, offset, data = read_header(path, b"#", b"#!END-HEADER")
    if not lines or not lines[0].startswith("!AER-DAT3.1"):
        raise FormatError(path, 0, f"not AEDAT 3.1 (first line {lines[0] if lines else ''!r})")
    if not (width and height):
        width, height = header_size(path, lines, sensor)
    streams = sorted({TYPES.get(int(head["type"]), f"type{int(head['type'])}")
                      for _, head in packets(path, data, offset) if head["type"] != 1})

    def chunks() -> Iterator[np.ndarray]:
        for start, head in packets(path, data, offset):
            if head["type"] != 1 or not head["number"]:
                continue
            raw = data[start:start + int(head["number"]) * POLARITY_EVENT.itemsize].view(POLARITY_EVENT)
            valid = np.flatnonzero(raw["data"] & 1)
            raw = raw[valid]
            events = np.empty(len(raw), EVENT_DTYPE)
            events["t"] = (np.int64(head["ts_overflow"]) << 31) | raw["t"].astype(np.int64)
            events["x"] = raw["data"] >> 17
            events["y"] = (raw["data"] >> 2) & 0x7FFF
            events["p"] = (raw["data"] >> 1) & 1
            check_bounds(path, events, width, height,
                         lambda i: start + valid[i] * POLARITY_EVENT.itemsize)
            yield events

    return Reader(path=path, format="aedat3", width=width, height=height, chunks=chunks,
                  streams=streams)


def write_aedat3(path: str, events: np.ndarray, width: int, height: int, source: str = "evpipe") -> None:
    """Write canonical events as AEDAT 3.1 polarity packets (one source, ``PACKET_EVENTS`` each).

    A packet never spans two timestamp overflow epochs (2**31 us), as the spec requires.
    """
    with open_for_writing(path, "wb") as out:
        out.write(b"#!AER-DAT3.1\r\n#Format: RAW\r\n")
        out.write(f"#Source 1: {source}\r\n#sizeX {width} sizeY {height}\r\n#!END-HEADER\r\n".encode())
        epochs = events["t"] >> 31
        cuts = np.flatnonzero(np.diff(epochs)) + 1
        for group in np.split(np.arange(len(events)), cuts):
            for first in range(0, len(group), PACKET_EVENTS):
                part = events[group[first:first + PACKET_EVENTS]]
                head = np.zeros(1, PACKET_HEADER)
                head[0] = (1, 1, POLARITY_EVENT.itemsize, 4, int(part["t"][0]) >> 31, len(part),
                           len(part), len(part))
                raw = np.empty(len(part), POLARITY_EVENT)
                raw["data"] = (1 | (part["p"].astype(np.uint32) << 1)
                               | (part["y"].astype(np.uint32) << 2) | (part["x"].astype(np.uint32) << 17))
                raw["t"] = part["t"] & 0x7FFFFFFF
                out.write(head.tobytes())
                out.write(raw.tobytes())


register_format(Format("aedat3", lambda path, head: head.startswith(MAGIC), open_aedat3, (".aedat",)))
