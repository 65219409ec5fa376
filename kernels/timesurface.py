"""Surface of active events (SAE) and the global exponential time surface sampled on demand.

The SAE holds, per channel (polarity, or one merged channel) and pixel, the timestamp (us) of the
last event there. Pixels that never saw an event hold ``NEVER`` (minus infinity in practice, never
0: a 0 would claim an event at the start of the clock). Updating costs one store per event; the
exponential surface ``exp(-(t - sae) / tau)`` is computed only when someone samples it, never by
decaying the whole map per event.

Checked against dv-processing ``TimeSurface.accept`` (merged channel, whose zero-initialised map
equals ours with ``NEVER`` read as 0) and tonic ``ToTimesurface`` (per polarity, sampled at its
slice ends).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# "No event yet": older than any real timestamp, and ``t - NEVER`` cannot overflow for t < 2**62
# us, so every kernel can subtract without a branch; exp(-(t - NEVER) / tau) is exactly 0.0.
NEVER = -(2**62)


def sae_new(width: int, height: int, channels: int = 2) -> np.ndarray:
    """A fresh SAE: int64 array (channels, height, width) filled with ``NEVER``."""
    return np.full((channels, height, width), NEVER, dtype=np.int64)


@njit(cache=True, nogil=True)
def sae_update(sae, t, x, y, p, merge):
    """Store each event's time (us) at ``sae[c, y, x]``; c = 0 if ``merge`` else the polarity."""
    for i in range(t.shape[0]):
        c = 0 if merge else p[i]
        sae[c, y[i], x[i]] = t[i]


@njit(cache=True, nogil=True)
def sample_surface(sae, t, tau, out):
    """Write ``exp(-(t - sae) / tau)`` into ``out`` (same shape as ``sae``); t, tau in us.

    Pixels without events give exactly 0. Costs one exp per pixel, so call it when a surface is
    wanted (at a slice end, for a viewer), not per event.
    """
    flat = sae.reshape(-1)
    res = out.reshape(-1)
    for i in range(flat.shape[0]):
        res[i] = math.exp(-(t - flat[i]) / tau)
