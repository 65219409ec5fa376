"""Writers: AEDAT 4.0 (dv-processing ``MonoCameraWriter``), ``.npy`` and CSV; ``convert``.

- ``.aedat4``: one event stream at the given resolution, written batch by batch.
- ``.npy``: one structured array in the canonical layout (t int64 us, x, y int16, p int8).
- ``.csv``: header ``t,x@W,y@H,p`` (sizes travel with the file), one event per line.
- ``.aedat``: AEDAT 3.1 polarity packets (``sensors.aedat3.write_aedat3``).

Every writer keeps t, x, y, p exactly, so reading the output back gives the same events.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from pipeline.core.events import concat_records
from sensors.dv_events import to_dv
from sensors.readers import FormatError, open_reader


def write_aedat4(path: str, chunks: Iterable[np.ndarray], width: int, height: int) -> int:
    import dv_processing as dv

    config = dv.io.MonoCameraWriter.EventOnlyConfig("evpipe", (width, height))
    writer = dv.io.MonoCameraWriter(path, config)
    count = 0
    for chunk in chunks:
        if len(chunk):
            writer.writeEvents(to_dv(chunk))
            count += len(chunk)
    del writer  # closes the file
    return count


def write_npy(path: str, chunks: Iterable[np.ndarray], width: int, height: int) -> int:
    events = concat_records(chunks)
    np.save(path, events)
    return len(events)


def write_csv(path: str, chunks: Iterable[np.ndarray], width: int, height: int) -> int:
    count = 0
    with open(path, "w") as out:
        out.write(f"t,x@{width},y@{height},p\n")
        for chunk in chunks:
            table = np.stack([chunk["t"], chunk["x"], chunk["y"], chunk["p"]], axis=1)
            np.savetxt(out, table, fmt="%d", delimiter=",")
            count += len(chunk)
    return count


def write_aedat3(path: str, chunks: Iterable[np.ndarray], width: int, height: int) -> int:
    from sensors.aedat3 import write_aedat3 as write

    events = concat_records(chunks)
    write(path, events, width, height)
    return len(events)


WRITERS = {".aedat4": write_aedat4, ".npy": write_npy, ".csv": write_csv, ".aedat": write_aedat3}


def convert(source, target, format: str = "auto", **options) -> dict:
    """Read ``source`` (any readable format) and write ``target`` by its suffix; returns a summary."""
    target = os.fspath(target)
    suffix = os.path.splitext(target)[1].lower()
    if suffix not in WRITERS:
        raise FormatError(target, None, f"cannot write {suffix or 'files without a suffix'!r}; "
                                        f"writable: {', '.join(WRITERS)}")
    reader = open_reader(source, format, **options)
    count = WRITERS[suffix](target, reader.chunks(), reader.width, reader.height)
    return {"from": reader.path, "format": reader.format, "to": target, "events": count,
            "width": reader.width, "height": reader.height}
