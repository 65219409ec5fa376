"""Geometry: a region of the sensor mapped onto a smaller pixel grid (crop, then down-scale).

The region is the rectangle of top-left corner (``x0``, ``y0``) and size ``width`` x ``height``
(px) of the input sensor; it is mapped onto ``out_width`` x ``out_height`` (px), each no larger
than the region's side, by the rule of tonic's ``Downsample`` (``tonic.transforms.Downsample``
with ``sensor_size`` and ``target_size``):

    x' = floor((x - x0) * out_width / width),   y' = floor((y - y0) * out_height / height)

computed exactly in integers. tonic multiplies by the float ``out_width / width``, which lands
one pixel low at some exact multiples (44 -> 30 px: x = 22 gives 14 instead of 15); for the
sizes of the cameras evpipe reads (128, 240, 260, 320, 346, 480, 640, 720, 1280 px onto 34 px)
the two agree on every coordinate. The factor may be fractional: each output pixel then covers
``floor`` or ``ceil`` of ``width / out_width`` input columns.

Events that land on one output pixel are merged by integrate-and-fire, one counter per output
pixel and polarity: every event adds 1, and when the counter reaches ``threshold`` the event is
emitted at its own time t (with the new coordinates) and the counter restarts at 0. So the output
holds at most ``1 / threshold`` of each output pixel's input, per polarity. ``threshold = 1``
keeps every event (exactly tonic's ``Downsample``, which "does not drop any events");
``threshold`` = the number of input pixels per output pixel (``area_threshold``) makes a coarse
pixel fire about once per contrast step of the area it covers, as a sensor of the output size
watching the same scene would: an edge crossing the area makes each of its input pixels fire
about once per step. This is the integrator of Ghosh et al. 2023 ("Insect-inspired
spatio-temporal downsampling of event-based input", ICONS; ``tonic.transforms.EventDownsampling``)
without its two departures: events are not binned in ``dt`` steps (output times are input times),
and ON and OFF keep separate counters instead of one ON minus OFF sum, which would cancel the
leading and trailing edges of a small object inside one coarse pixel. Events outside the region
are dropped. The counters are state the caller owns (``counters``), so a stream gives the same
output packet by packet as in one go.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def counters(out_width: int, out_height: int) -> np.ndarray:
    """Fresh integrate-and-fire counters: int64 (2, out_height, out_width) zeros, channel 1 ON."""
    return np.zeros((2, out_height, out_width), np.int64)


def area_threshold(width: int, height: int, out_width: int, out_height: int) -> int:
    """Input pixels per output pixel, rounded down (at least 1): the threshold at which the
    output fires about as a sensor of the output size would (module docstring)."""
    return max(1, (width * height) // (out_width * out_height))


@njit(cache=True, nogil=True)
def scale_tables(width, height, out_width, out_height):
    """The output column of each column of a ``width`` x ``height`` region and the output row of
    each of its rows (int64, ``floor(d * out / side)`` in integers), so that mapping an event
    costs two reads instead of two divisions."""
    cols = np.arange(width) * out_width // width
    rows = np.arange(height) * out_height // height
    return cols, rows


@njit(cache=True, nogil=True, inline="always")
def _scale_event(x, y, p, x0, y0, cols, rows, threshold, counts):
    """The output pixel (x, y) one event fires, or (-1, -1): outside the region (whose columns
    and rows are those of ``scale_tables``) or below ``threshold`` (the event is counted)."""
    dx = np.int64(x) - x0
    dy = np.int64(y) - y0
    if dx < 0 or dy < 0 or dx >= len(cols) or dy >= len(rows):
        return -1, -1
    xo, yo = cols[dx], rows[dy]
    c = 1 if p else 0
    n = counts[c, yo, xo] + 1
    if n >= threshold:
        counts[c, yo, xo] = 0
        return xo, yo
    counts[c, yo, xo] = n
    return -1, -1


@njit(cache=True, nogil=True)
def scale(x, y, p, x0, y0, width, height, threshold, counts, out_x, out_y, keep):
    """Map events (x, y px, p: nonzero is ON) of the region (x0, y0, width, height) onto the grid
    of ``counts`` (2, out_height, out_width), merging by integrate-and-fire at ``threshold``
    events (module docstring). Writes ``keep`` (bool) and, for kept events, ``out_x``, ``out_y``;
    returns how many are kept."""
    cols, rows = scale_tables(width, height, counts.shape[2], counts.shape[1])
    kept = 0
    for i in range(x.shape[0]):
        xo, yo = _scale_event(x[i], y[i], p[i], x0, y0, cols, rows, threshold, counts)
        keep[i] = xo >= 0
        if xo >= 0:
            out_x[i], out_y[i] = xo, yo
            kept += 1
    return kept


@njit(cache=True, nogil=True)
def scale_records(records, x0, y0, cols, rows, threshold, counts, out):
    """``scale`` on a structured array of events (fields t, x, y, p), in one compiled call, the
    region given by its corner (``x0``, ``y0``) and ``scale_tables``: the events it emits, with
    their output coordinates, are written to ``out`` (same dtype, as long as ``records``) in
    order; returns how many."""
    kept = 0
    for i in range(len(records)):
        record = records[i]
        xo, yo = _scale_event(record.x, record.y, record.p, x0, y0, cols, rows, threshold,
                              counts)
        if xo >= 0:
            out[kept] = record
            out[kept].x, out[kept].y = xo, yo
            kept += 1
    return kept
