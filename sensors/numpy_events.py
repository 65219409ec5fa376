"""NumPy ``.npy`` / ``.npz`` structured event arrays.

A ``.npy`` file holds one structured array with t/x/y/p fields (aliases as ``from_structured``:
ts/timestamp, polarity/on). A ``.npz`` holds such an array under ``events`` (or its only array
besides the size), or one plain array per field (``t``, ``x``, ``y``, ``p``), and may state the
sensor size as integer scalars ``width`` and ``height`` (px), as ``sensors.writers`` writes it.
The ``.npy`` header is checked against the file size so a truncated file names the offset of the
first missing record; the data is memory-mapped and converted in chunks. Sensor size: ``sensor``
or ``width``/``height`` when given, else the size the ``.npz`` states, else the largest
coordinate + 1.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from pipeline.core.events import from_structured, make_events
from pipeline.core.model import NPZ_ERRORS
from sensors.common import check_bounds, sensor_size
from sensors.readers import Format, FormatError, Reader, register_format

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
CHUNK = 1 << 20


def map_npy(path: str) -> np.ndarray:
    """The array of a ``.npy`` file, memory-mapped after checking its header and length."""
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(handle)
        except NPZ_ERRORS as exc:
            raise FormatError(path, handle.tell(), f"bad .npy header: {exc}") from None
        offset = handle.tell()
    if dtype.names is None or len(shape) != 1 or dtype.hasobject:
        raise FormatError(path, 0, f".npy holds {dtype} of shape {shape}, not a 1-d structured "
                                   f"event array")
    size = np.prod(shape, dtype=np.int64) * dtype.itemsize
    actual = np.memmap(path, dtype=np.uint8, mode="r").size if size else 0
    if actual - offset < size:
        whole = offset + (max(actual - offset, 0) // dtype.itemsize) * dtype.itemsize
        raise FormatError(path, whole, f"truncated .npy: {shape[0]} records of {dtype.itemsize} bytes "
                                       f"need {offset + size} bytes, the file has {actual}")
    if not size:
        return np.empty(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


SIZE_KEYS = ("width", "height")


def load_npz(path: str) -> tuple[np.ndarray, int, int]:
    """Canonical events from a ``.npz`` archive and the sensor size it states, (0, 0) when it
    states none (see the module docstring)."""
    try:
        with np.load(path) as archive:
            keys = [k for k in archive.keys() if k not in SIZE_KEYS]
            stated = [archive[k] for k in SIZE_KEYS if k in archive.keys()]
            if len(stated) == 2 and all(a.shape == () and a.dtype.kind in "iu" for a in stated):
                width, height = map(int, stated)
            elif stated:
                raise ValueError(f"width and height must both be integer scalars, got {stated}")
            else:
                width = height = 0
            if "events" in keys or len(keys) == 1:
                return from_structured(archive["events" if "events" in keys else keys[0]]), width, height
            picked = {f: next((archive[k] for k in names if k in keys), None) for f, names in
                      {"t": ("t", "ts", "timestamp"), "x": ("x",), "y": ("y",),
                       "p": ("p", "polarity", "on")}.items()}
    except (*NPZ_ERRORS, KeyError) as exc:
        raise FormatError(path, None, f"bad .npz archive: {exc}") from None
    missing = [f for f, a in picked.items() if a is None]
    if missing or len({len(a) for a in picked.values()}) != 1:
        raise FormatError(path, None, f".npz needs equally long t, x, y, p arrays (missing {missing}, "
                                      f"keys {keys})")
    return make_events(picked["t"], picked["x"], picked["y"], picked["p"]), width, height


def open_numpy(path: str, sensor: str = "", width: int = 0, height: int = 0) -> Reader:
    """A ``.npy`` or ``.npz`` event array."""
    with open(path, "rb") as handle:
        head = handle.read(len(NPY_MAGIC))
    array, stated_width, stated_height = (map_npy(path), 0, 0) if head == NPY_MAGIC else load_npz(path)
    try:
        from_structured(array[:0])
    except ValueError as exc:
        raise FormatError(path, 0, str(exc)) from None
    if sensor:
        width, height = sensor_size(sensor, path)
    if not (width and height):
        width, height = stated_width, stated_height
    if not (width and height):
        width = int(array["x"].max()) + 1 if len(array) else 0
        height = int(array["y"].max()) + 1 if len(array) else 0

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, len(array), CHUNK):
            events = from_structured(np.asarray(array[start:start + CHUNK]))
            check_bounds(path, events, width, height, lambda i: start + i)
            yield events

    return Reader(path=path, format="numpy", width=width, height=height, chunks=chunks)


register_format(Format("numpy", lambda path, head: head.startswith(NPY_MAGIC) or (
    head.startswith(ZIP_MAGIC) and path.endswith(".npz")), open_numpy, (".npy", ".npz")))
