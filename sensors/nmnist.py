"""N-MNIST binary files (Orchard et al. 2015): 40-bit big-endian records, no header.

Each event is 5 bytes: x (8 bits), y (8 bits), then polarity in the top bit of byte 2 (1 = ON)
followed by a 23-bit timestamp in us over bytes 2..4. The same layout holds the DVS Gesture
excerpts at 128x128, so the sensor size is an option; by default it is 34x34 (N-MNIST) when every
coordinate fits, else 128x128, else 256x256.
"""

from __future__ import annotations

import os

import numpy as np

from pipeline.core.events import EVENT_DTYPE
from sensors.readers import Format, FormatError, Reader, register_format

RECORD_BYTES = 5


def decode(raw: np.ndarray) -> np.ndarray:
    """Canonical events from an (n, 5) uint8 array of N-MNIST records."""
    out = np.empty(len(raw), dtype=EVENT_DTYPE)
    out["x"] = raw[:, 0]
    out["y"] = raw[:, 1]
    out["p"] = raw[:, 2] >> 7
    out["t"] = ((raw[:, 2].astype(np.int64) & 0x7F) << 16) | (raw[:, 3].astype(np.int64) << 8) | raw[:, 4]
    return out


def default_size(events: np.ndarray) -> int:
    """Smallest of 34, 128, 256 that holds every coordinate."""
    if not len(events):
        return 34
    high = max(int(events["x"].max()), int(events["y"].max()))
    return next(size for size in (34, 128, 256) if high < size)


def read(path: str) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    if len(data) % RECORD_BYTES:
        whole = len(data) - len(data) % RECORD_BYTES
        raise FormatError(path, whole, f"truncated N-MNIST record: {len(data)} bytes is not a "
                                       f"multiple of {RECORD_BYTES}")
    events = decode(data.reshape(-1, RECORD_BYTES))
    back = np.flatnonzero(np.diff(events["t"]) < 0)
    if len(back):  # the layout has no magic: a file of another kind reads as records out of order
        i = int(back[0]) + 1
        raise FormatError(path, i * RECORD_BYTES, f"record {i} has t={events['t'][i]} us, before "
                                                  f"the previous {events['t'][i - 1]} us: not "
                                                  f"N-MNIST records in time order")
    return events


def open_nmnist(path: str, width: int = 0, height: int = 0) -> Reader:
    events = read(path)
    size = default_size(events)
    width, height = width or size, height or size
    if len(events) and (events["x"].max() >= width or events["y"].max() >= height):
        raise FormatError(path, None, f"coordinates exceed the {width}x{height} sensor size")
    return Reader(path=path, format="nmnist", width=width, height=height, chunks=lambda: iter([events]))


def _detect(path: str, head: bytes) -> bool:
    return path.endswith(".bin") and os.path.getsize(path) % RECORD_BYTES == 0


register_format(Format("nmnist", _detect, open_nmnist, (".bin",)))
