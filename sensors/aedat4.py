"""AEDAT 4.0 recordings (iniVation), read through dv-processing's ``MonoCameraRecording``.

Only the event stream is replayed; IMU, frame and trigger streams are listed in
``Reader.streams`` and skipped. Timestamps are the file's own (us since the Unix epoch). A file
with several cameras is read through ``camera`` (the camera name, as ``evpipe info`` lists it).

dv-processing 2.0 hangs or crashes on some corrupt files (``sensors.aedat4_container`` says which
and why), so by default (``validate=1``) the container is walked first: IOHeader, packet headers
and FileDataTable before dv-processing opens the file, then each event payload just before
dv-processing decodes it, mostly by a thread running ahead, so corruption is a FormatError at the
bad packet's byte offset and, with a core to spare, costs little time. ``validate=0`` skips both
for trusted files.
"""

from __future__ import annotations

import threading
from typing import Iterator

import numpy as np

from sensors.aedat4_container import (
    AT,
    BAD_ROW,
    CHECKED,
    HEAD_BYTES,
    HEADER_START,
    MAGIC,
    PROBLEM,
    READER_CHECKED,
    STOP,
    Container,
    check_event_payloads,
    lz4_event_payload_problem,
    read_container,
)
from sensors.dv_events import dv_message, from_dv
from sensors.readers import Format, FormatError, Reader, register_format


class PayloadChecker:
    """Checks a container's LZ4 event payloads in a thread (compiled, without the GIL) ahead of
    the reader; a row the thread has not reached yet is checked by the reader itself, so it
    never waits and, without a free core, costs what checking in line would."""

    def __init__(self, container: Container):
        self.container = container
        self.head = np.empty(HEAD_BYTES, np.uint8)
        self.status = np.zeros(6, np.int64)
        self.thread = threading.Thread(target=check_event_payloads, daemon=True,
                                       args=(container.data, container.events, self.status))
        self.thread.start()

    def ready(self, row: int) -> None:
        """Return once event payload ``row`` is known good; FormatError if it is bad."""
        status = self.status
        if status[CHECKED] > row:
            return
        if status[PROBLEM] and status[BAD_ROW] == row:
            problem, at = int(status[PROBLEM]), int(status[AT])
        else:
            problem, at = lz4_event_payload_problem(self.container.data, self.container.events[row], self.head)
        if problem:
            raise self.container.problem(row, problem, at)
        status[READER_CHECKED] = row + 1

    def stop(self) -> None:
        self.status[STOP] = 1
        self.thread.join()


def open_aedat4(path: str, camera: str = "", validate: int = 1) -> Reader:
    import dv_processing as dv

    container = read_container(path, camera) if validate else None
    header_offset = HEADER_START if container else None  # what dv-processing parses when it opens

    def recording():
        try:
            return dv.io.MonoCameraRecording(path, camera) if camera else dv.io.MonoCameraRecording(path)
        except RuntimeError as exc:
            raise FormatError(path, header_offset,
                              f"dv-processing cannot open it as AEDAT 4.0: {dv_message(exc)}") from None

    first = [recording()]  # the first chunks() call reads through this one
    if not first[0].isEventStreamAvailable():
        raise FormatError(path, header_offset, "AEDAT 4.0 file has no event stream")
    resolution = first[0].getEventResolution()
    if resolution is None:
        raise FormatError(path, header_offset, "AEDAT 4.0 event stream declares no sensor size (sizeX, sizeY)")
    width, height = resolution
    streams = [name for name, available in (
        ("frames", first[0].isFrameStreamAvailable()),
        ("imu", first[0].isImuStreamAvailable()),
        ("triggers", first[0].isTriggerStreamAvailable()),
    ) if available]

    def chunks() -> Iterator[np.ndarray]:
        reader = first.pop() if first else recording()
        checker = PayloadChecker(container) if container and not container.events_checked else None
        row = 0
        try:
            while True:
                at = int(container.events[row, 0]) if container and row < len(container.events) else None
                if checker and at is not None:
                    checker.ready(row)
                try:
                    batch = reader.getNextEventBatch()
                except RuntimeError as exc:
                    raise FormatError(path, at, f"corrupt AEDAT 4.0 event packet: {dv_message(exc)}") from None
                if batch is None:
                    return
                if container and at is None:
                    raise FormatError(path, None, "dv-processing read more event packets than the "
                                                  "FileDataTable lists")
                row += 1
                yield from_dv(batch)
        finally:
            if checker:
                checker.stop()

    return Reader(path=path, format="aedat4", width=width, height=height, chunks=chunks, streams=streams)


register_format(Format("aedat4", lambda path, head: head.startswith(MAGIC[:12]), open_aedat4, (".aedat4",)))
