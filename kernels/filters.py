"""Event filters: background-activity denoise, refractory period and pixel masks (ROI, hot pixels).

Each kernel writes a boolean ``keep`` array (one entry per event) and returns how many events it
keeps; per-pixel state lives in int64 (height, width) maps of timestamps in us that the caller
owns, so a stream can be filtered packet by packet with the same result as in one go.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels.timesurface import NEVER


def last_times(width: int, height: int, dv_compatible: bool = False) -> np.ndarray:
    """A (height, width) int64 last-timestamp map.

    ``dv_compatible`` starts it at 0 like dv-processing's zero-initialised ``TimeSurface``, so an
    event in the first ``duration`` us of the clock counts as supported by pixels that never fired.
    Otherwise it starts at ``NEVER`` (minus infinity), which is what the filters mean.
    """
    return np.full((height, width), 0 if dv_compatible else NEVER, dtype=np.int64)


@njit(cache=True, nogil=True)
def background_activity(t, x, y, last, duration, keep):
    """Keep events supported by one of their 8 neighbours within ``duration`` us.

    Same decision as dv-processing ``noise.BackgroundActivityNoiseFilter``: an event at (x, y, t)
    is kept when some neighbour pixel (the pixel itself excluded, sensor borders clipped) holds a
    time ``t_n`` with ``t - t_n < duration``; then ``last[y, x] = t`` for every event, kept or not.
    """
    height, width = last.shape
    kept = 0
    for i in range(t.shape[0]):
        ti, xi, yi = t[i], x[i], y[i]
        support = False
        for yy in range(max(yi - 1, 0), min(yi + 2, height)):
            for xx in range(max(xi - 1, 0), min(xi + 2, width)):
                if ti - last[yy, xx] < duration and (yy != yi or xx != xi):
                    support = True
                    break
            if support:
                break
        last[yi, xi] = ti
        keep[i] = support
        kept += support
    return kept


@njit(cache=True, nogil=True)
def refractory(t, x, y, last, period, keep):
    """Drop events less than ``period`` us after the last *kept* event at the same pixel.

    Both polarities share the pixel's refractory state; a dropped event does not extend it.
    """
    kept = 0
    for i in range(t.shape[0]):
        ok = t[i] - last[y[i], x[i]] >= period
        if ok:
            last[y[i], x[i]] = t[i]
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
