"""Event Stream ``.es`` files (Marcireau et al.), decoded by faery.

Spec followed: the Event Stream 2.0 format (github.com/neuromorphic-paris/event_stream): the magic
``Event Stream``, a version, an event type byte (generic, dvs, atis, color), the sensor size, then
variable-length events. faery's ``Decoder`` yields DVS events (ATIS exposure events removed) with y
flipped to the top-left origin that every other format here uses; timestamps are us from 0.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from pipeline.core.events import from_structured
from sensors.readers import Format, FormatError, Reader, register_format

MAGIC = b"Event Stream"


def faery_errors():
    """The exception types faery raises on bad input (its Rust panics are not ``Exception``)."""
    try:
        from pyo3_runtime import PanicException
    except ImportError:  # faery built without the panic type exported
        return (Exception,)
    return (Exception, PanicException)


def open_es(path: str) -> Reader:
    """An Event Stream file of DVS or ATIS events."""
    import faery

    try:
        decoder = faery.file_decoder.Decoder(path, file_type="es")
        width, height = decoder.dimensions()
    except faery_errors() as exc:
        raise FormatError(path, 0, f"faery cannot open it as Event Stream: {exc}") from None

    def chunks() -> Iterator[np.ndarray]:
        done = 0
        try:
            for packet in decoder:
                done += len(packet)
                yield from_structured(packet)
        except faery_errors() as exc:
            # faery reports no byte offset for corrupt data
            raise FormatError(path, None, f"corrupt Event Stream data after {done} events: {exc}") from None

    return Reader(path=path, format="es", width=width, height=height, chunks=chunks)


register_format(Format("es", lambda path, head: head.startswith(MAGIC), open_es, (".es",)))
