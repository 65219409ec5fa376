"""Event filters: background-activity denoise, refractory period and pixel masks (ROI, hot pixels).

Each kernel writes a boolean ``keep`` array (one entry per event) and returns how many events it
keeps; per-pixel state lives in int64 maps of timestamps in us that the caller owns
(``last_times``), so a stream can be filtered packet by packet with the same result as in one go.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels.timesurface import NEVER


def last_times(width: int, height: int, dv_compatible: bool = False) -> np.ndarray:
    """An int64 last-timestamp map of (height + 2, width + 2): pixel (x, y) is ``[y + 1, x + 1]``.

    The one-pixel border stays ``NEVER`` (minus infinity): pixels beyond the sensor never fired,
    so the 3 x 3 neighbourhood of any pixel is read without bounds checks.
    ``dv_compatible`` starts the sensor pixels at 0 like dv-processing's zero-initialised
    ``TimeSurface``, so an event in the first ``duration`` us of the clock counts as supported by
    pixels that never fired. Otherwise they start at ``NEVER``, which is what the filters mean.
    """
    last = np.full((height + 2, width + 2), NEVER, dtype=np.int64)
    if dv_compatible:
        last[1:-1, 1:-1] = 0
    return last


@njit(cache=True, nogil=True, inline="always")
def _supported(flat, cols, t, x, y, duration):
    """Whether an event at (x, y, t) has a neighbour within ``duration`` us in the padded map
    ``flat`` (``last_times``, flattened; ``cols`` its row length, uint64); the pixel takes t."""
    one = np.uint64(1)
    mid = (np.uint64(y) + one) * cols + np.uint64(x) + one
    up, down = mid - cols, mid + cols
    newest = max(max(max(flat[up - one], flat[up]), max(flat[up + one], flat[mid - one])),
                 max(max(flat[mid + one], flat[down - one]), max(flat[down], flat[down + one])))
    flat[mid] = t
    return t - newest < duration


@njit(cache=True, nogil=True)
def background_activity(t, x, y, last, duration, keep):
    """Keep events supported by one of their 8 neighbours within ``duration`` us.

    Same decision as dv-processing ``noise.BackgroundActivityNoiseFilter``: an event at (x, y, t)
    is kept when some neighbour pixel (the pixel itself excluded, sensor borders clipped) holds a
    time ``t_n`` with ``t - t_n < duration``, i.e. when ``t`` minus the latest neighbour time is
    below ``duration``; then the pixel takes ``t`` for every event, kept or not. Branch-free: the
    padded map (``last_times``) has no border cases, and unsigned flat indices skip numba's
    negative-index wraparound.
    """
    cols = np.uint64(last.shape[1])
    flat = last.reshape(-1)
    kept = 0
    for i in range(t.shape[0]):
        support = _supported(flat, cols, t[i], x[i], y[i], duration)
        keep[i] = support
        kept += support
    return kept


@njit(cache=True, nogil=True)
def background_activity_records(records, last, duration, out):
    """``background_activity`` on a structured array of events (fields t, x, y), in one compiled
    call: the events it keeps are written to ``out`` (same dtype, as long as ``records``) in
    order; returns how many."""
    cols = np.uint64(last.shape[1])
    flat = last.reshape(-1)
    kept = 0
    for i in range(len(records)):
        record = records[i]
        if _supported(flat, cols, record.t, record.x, record.y, duration):
            out[kept] = record
            kept += 1
    return kept


@njit(cache=True, nogil=True)
def refractory(t, x, y, last, period, keep):
    """Drop events less than ``period`` us after the last *kept* event at the same pixel.

    Both polarities share the pixel's refractory state; a dropped event does not extend it.
    """
    kept = 0
    for i in range(t.shape[0]):
        yi, xi = y[i] + 1, x[i] + 1  # the map is padded (``last_times``)
        ok = t[i] - last[yi, xi] >= period
        if ok:
            last[yi, xi] = t[i]
            kept += 1
        keep[i] = ok
    return kept


@njit(cache=True, nogil=True)
def pixel_mask(x, y, mask, keep):
    """Keep events whose pixel is True in the boolean (height, width) ``mask`` (ROI, hot pixels)."""
    kept = 0
    for i in range(x.shape[0]):
        ok = mask[y[i], x[i]]
        keep[i] = ok
        kept += ok
    return kept


@njit(cache=True, nogil=True)
def count_events(x, y, counts):
    """Add one to ``counts[y, x]`` per event (hot-pixel learning)."""
    for i in range(x.shape[0]):
        counts[y[i], x[i]] += 1
