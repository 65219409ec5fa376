"""HDF5 event files in the DSEC layout, read through h5py.

Layout (DSEC, Gehrig et al. 2021): datasets ``events/x``, ``events/y``, ``events/t`` (us) and
``events/p`` (1 = ON) of equal length, an optional scalar ``t_offset`` (us) added to every t so
times are in the file's absolute time base, and an optional ``ms_to_idx`` index (ignored). Sensor
size from ``width``/``height`` attributes of ``events`` (as our tools write them), else the
options, else the largest coordinate + 1. Datasets are read in slices, never whole.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from pipeline.core.events import make_events
from sensors.common import check_bounds, sensor_size
from sensors.readers import Format, FormatError, Reader, register_format

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
FIELDS = ("t", "x", "y", "p")
CHUNK = 1 << 20


def dataset_offset(dataset) -> int | None:
    """Byte offset of a contiguous dataset in its file (None when chunked)."""
    return dataset.id.get_offset()


def open_hdf5(path: str, sensor: str = "", width: int = 0, height: int = 0) -> Reader:
    """A DSEC-layout HDF5 file."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if "events" not in handle or any(f not in handle["events"] for f in FIELDS):
                raise FormatError(path, None, "HDF5 file has no events/{x,y,t,p} datasets (DSEC layout)")
            group = handle["events"]
            lengths = {len(group[f]) for f in FIELDS}
            t_offset = int(handle["t_offset"][()]) if "t_offset" in handle else 0
            attrs = {k: int(group.attrs[k]) for k in ("width", "height") if k in group.attrs}
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        # h5py raises RuntimeError for damaged metadata (a B-tree signature, an address past
        # the end of the file)
        raise FormatError(path, None, f"h5py cannot read it: {exc}") from None
    if len(lengths) != 1:
        raise FormatError(path, None, f"events/{{t,x,y,p}} lengths differ: {sorted(lengths)}")
    count = lengths.pop()

    def read(start: int, stop: int) -> np.ndarray:
        with h5py.File(path, "r") as handle:
            group = handle["events"]
            columns = {}
            for field in FIELDS:
                try:
                    columns[field] = group[field][start:stop]
                except (OSError, ValueError, RuntimeError) as exc:
                    raise FormatError(path, dataset_offset(group[field]),
                                      f"cannot read events/{field}[{start}:{stop}]: {exc}") from None
        return make_events(columns["t"].astype(np.int64) + t_offset, columns["x"], columns["y"],
                           columns["p"])

    if sensor:
        width, height = sensor_size(sensor, path)
    if not (width and height):
        width, height = attrs.get("width", 0), attrs.get("height", 0)
    if not (width and height) and count:
        extent = [read(s, s + CHUNK) for s in range(0, count, CHUNK)]
        width = max(int(e["x"].max()) for e in extent) + 1
        height = max(int(e["y"].max()) for e in extent) + 1

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, count, CHUNK):
            events = read(start, start + CHUNK)
            check_bounds(path, events, width, height, lambda i: None)
            yield events

    return Reader(path=path, format="hdf5", width=width, height=height, chunks=chunks)


register_format(Format("hdf5", lambda path, head: head.startswith(HDF5_MAGIC), open_hdf5,
                       (".h5", ".hdf5")))
