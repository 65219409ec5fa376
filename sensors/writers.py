"""Writers: AEDAT 4.0, NumPy ``.npz``, CSV and AEDAT 3.1; ``convert`` picks one by the suffix.

- ``.aedat4``: ``Aedat4Writer``, one event stream written chunk by chunk by faery's AEDAT encoder
  (LZ4-compressed packets, the FileDataTable written at close), read back by dv-processing and
  DV. The format keeps events in time order from t = 0: an event whose t is below the previous
  one's (or below 0) is a FormatError naming the output and the event.
- ``.npz``: ``events`` (the canonical structured array: t int64 us, x, y int16, p int8),
  ``width`` and ``height`` (px), read back by ``sensors.numpy_events``.
- ``.csv``: header ``t,x@W,y@H,p`` (sizes travel with the file), one event per line.
- ``.aedat``: AEDAT 3.1 polarity packets (``sensors.aedat3.write_aedat3``).

A ``.npy`` file cannot hold the sensor size, so it is not written (``.npz`` is). Every writer
creates the output's folder first (``pipeline.core.files``) and keeps t, x, y, p exactly, so
reading the output back gives the same events at the same sensor size.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from pipeline.core.events import concat_records
from pipeline.core.files import make_parent, open_for_writing
from sensors.readers import FormatError, open_reader

FAERY_EVENT = np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])  # faery's event packets


def faery_packet(events: np.ndarray) -> np.ndarray:
    """Canonical events (t >= 0) as a faery event packet: t uint64 us, x, y uint16, on bool."""
    packet = np.empty(len(events), FAERY_EVENT)
    packet["t"], packet["x"], packet["y"], packet["on"] = events["t"], events["x"], events["y"], events["p"]
    return packet


def aedat4_description(camera: str, width: int, height: int) -> list:
    """The AEDAT 4.0 IOHeader description of one LZ4 event stream (id 0), as DV's recorder
    writes it: faery ``DescriptionNode``s."""
    from faery.extension import aedat

    def text(value):
        return aedat.DescriptionAttribute(attribute_type="string", value=value)

    def number(value):
        return aedat.DescriptionAttribute(attribute_type="int", value=value)

    root = "/mainloop/Recorder/outInfo/"
    info = aedat.DescriptionNode(name="info", path=f"{root}0/info/", nodes=[], attributes={
        "sizeX": number(width), "sizeY": number(height), "source": text(camera)})
    stream = aedat.DescriptionNode(name="0", path=f"{root}0/", nodes=[info], attributes={
        "compression": text("LZ4"), "originalOutputName": text("events"), "typeIdentifier": text("EVTS")})
    return [aedat.DescriptionNode(name="outInfo", path=root, attributes={}, nodes=[stream])]


class Aedat4Writer:
    """An AEDAT 4.0 file written incrementally: ``Aedat4Writer(path, width, height, camera)``
    creates the folder and the file, ``write(events)`` appends canonical events, ``close()``
    completes the file (also as a context manager). ``count`` is the number of events written."""

    def __init__(self, path, width: int, height: int, camera: str = "evpipe"):
        from faery.extension import aedat

        self.path = make_parent(path)
        self.count = 0
        self.t_last = 0  # us; the next event may not come before it
        try:
            self.encoder = aedat.Encoder(path=self.path, description=aedat4_description(camera, width, height),
                                         compression=aedat.LZ4_DEFAULT)
        except RuntimeError as exc:  # faery's I/O errors
            raise FormatError(self.path, None, f"cannot create the file: {exc}") from None
        self.encoder.__enter__()

    def write(self, events: np.ndarray) -> None:
        """Append canonical events; FormatError (nothing of ``events`` written) at the first one
        that comes before the previous event or t = 0."""
        if not len(events):
            return
        t = events["t"]
        back = np.flatnonzero(np.diff(t, prepend=self.t_last) < 0)
        if len(back):
            i = int(back[0])
            raise FormatError(self.path, None, f"AEDAT 4.0 keeps events in time order from t = 0: "
                                               f"event {self.count + i} has t={t[i]} us, after "
                                               f"{int(t[i - 1]) if i else self.t_last} us")
        self.encoder.write(0, faery_packet(events))
        self.count += len(events)
        self.t_last = int(t[-1])

    def close(self) -> None:
        if self.encoder is not None:
            self.encoder.__exit__(None, None, None)
            self.encoder = None

    def __enter__(self) -> Aedat4Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_aedat4(path: str, chunks: Iterable[np.ndarray], width: int, height: int) -> int:
    with Aedat4Writer(path, width, height) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return writer.count


def write_npz(path: str, chunks: Iterable[np.ndarray], width: int, height: int) -> int:
    events = concat_records(chunks)
    with open_for_writing(path, "wb") as out:  # a file object: numpy adds no second suffix
        np.savez(out, events=events, width=np.int64(width), height=np.int64(height))
    return len(events)


def write_csv(path: str, chunks: Iterable[np.ndarray], width: int, height: int) -> int:
    count = 0
    with open_for_writing(path) as out:
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


WRITERS = {".aedat4": write_aedat4, ".npz": write_npz, ".csv": write_csv, ".aedat": write_aedat3}
REFUSED = {".npy": "a .npy file cannot hold the sensor size; write .npz (events, width, height)"}


def writable(target: str, suffixes=tuple(WRITERS)) -> str:
    """The suffix of ``target`` (lower case) when it is one of ``suffixes``; otherwise a
    FormatError naming ``target`` and the suffixes that can be written."""
    suffix = os.path.splitext(target)[1].lower()
    if suffix not in suffixes:
        raise FormatError(target, None, REFUSED.get(suffix) or (
            f"cannot write {suffix or 'files without a suffix'!r}; writable: {', '.join(suffixes)}"))
    return suffix


def convert(source, target, format: str = "auto", **options) -> dict:
    """Read ``source`` (any readable format) and write ``target`` by its suffix; returns a summary."""
    target = os.fspath(target)
    suffix = writable(target)
    if os.path.exists(target) and os.path.exists(source) and os.path.samefile(source, target):
        # the writers truncate the target before the readers have read it all
        raise FormatError(target, None, "is the input itself; write to another path")
    reader = open_reader(source, format, **options)
    count = WRITERS[suffix](target, reader.chunks(), reader.width, reader.height)
    return {"from": reader.path, "format": reader.format, "to": target, "events": count,
            "width": reader.width, "height": reader.height}
