"""Summary of a recording: what ``evpipe info`` prints."""

from __future__ import annotations

import numpy as np

from sensors.readers import open_reader


def info(path, format: str = "auto", **options) -> dict:
    """Format, sensor size, event count, first/last t (file time base, us), duration (us), ON
    fraction (rounded to 4 decimals, None without events) and the other streams in the file.

    Decodes the whole file chunk by chunk, never holding more than one chunk.
    """
    reader = open_reader(path, format, **options)
    count = on = 0
    t_first = t_last = None
    for chunk in reader.chunks():
        if not len(chunk):
            continue
        if t_first is None:
            t_first = int(chunk["t"][0])
        t_last = int(chunk["t"][-1])
        count += len(chunk)
        on += int(np.count_nonzero(chunk["p"]))
    return {
        "path": reader.path,
        "format": reader.format,
        "width": reader.width,
        "height": reader.height,
        "events": count,
        "t_first": t_first,
        "t_last": t_last,
        "duration": None if t_first is None else t_last - t_first,
        "on_fraction": round(on / count, 4) if count else None,
        "streams": list(reader.streams),
    }
