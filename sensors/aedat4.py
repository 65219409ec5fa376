"""AEDAT 4.0 recordings (iniVation), read through dv-processing's ``MonoCameraRecording``.

Only the event stream is replayed; IMU, frame and trigger streams are listed in
``Reader.streams`` and skipped. Timestamps are the file's own (us since the Unix epoch).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from pipeline.events import from_dv
from sensors.readers import Format, FormatError, Reader, register_format

MAGIC = b"#!AER-DAT4.0"


def open_aedat4(path: str, camera: str = "") -> Reader:
    import dv_processing as dv

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
