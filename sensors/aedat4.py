"""AEDAT 4.0 recordings (iniVation), read through dv-processing's ``MonoCameraRecording``.

Only the event stream is replayed; IMU, frame and trigger streams are listed in
``Reader.streams`` and skipped. Timestamps are the file's own (us since the Unix epoch). A file
with several cameras is read through ``camera`` (the camera name, as ``evpipe info`` lists it).

dv-processing 2.0 never returns from ``getNextEventBatch`` on some corrupted LZ4 packets, so by
default (``validate=1``) the file is first walked once with faery's AEDAT decoder, which reports
corruption as an error; ``validate=0`` skips that pass for trusted files.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from pipeline.events import from_dv
from sensors.readers import Format, FormatError, Reader, register_format

MAGIC = b"#!AER-DAT4.0"


def validate_packets(path: str) -> None:
    """Decode every packet with faery; FormatError on corruption (faery reports no offset)."""
    from faery.extension import aedat

    from sensors.eventstream import faery_errors

    try:
        with aedat.Decoder(path=path) as decoder:
            for _ in decoder:
                pass
    except faery_errors() as exc:
        raise FormatError(path, None, f"corrupt AEDAT 4.0 packet (faery: {exc})") from None


def open_aedat4(path: str, camera: str = "", validate: int = 1) -> Reader:
    import dv_processing as dv

    if validate:
        validate_packets(path)
    try:
        recording = dv.io.MonoCameraRecording(path, camera) if camera else dv.io.MonoCameraRecording(path)
    except RuntimeError as exc:
        raise FormatError(path, None, f"dv-processing cannot open it as AEDAT 4.0: {exc}") from None
    if not recording.isEventStreamAvailable():
        raise FormatError(path, None, "AEDAT 4.0 file has no event stream")
    width, height = recording.getEventResolution()
    streams = [name for name, available in (
        ("frames", recording.isFrameStreamAvailable()),
        ("imu", recording.isImuStreamAvailable()),
        ("triggers", recording.isTriggerStreamAvailable()),
    ) if available]

    def chunks() -> Iterator[np.ndarray]:
        reader = dv.io.MonoCameraRecording(path, camera) if camera else dv.io.MonoCameraRecording(path)
        while True:
            try:
                batch = reader.getNextEventBatch()
            except RuntimeError as exc:
                raise FormatError(path, None, f"corrupt AEDAT 4.0 event packet: {exc}") from None
            if batch is None:
                return
            yield from_dv(batch)

    return Reader(path=path, format="aedat4", width=width, height=height, chunks=chunks, streams=streams)


register_format(Format("aedat4", lambda path, head: head.startswith(MAGIC), open_aedat4, (".aedat4",)))
