"""Event frames for display: per-polarity counts with exponential decay, and their colouring.

The value of pixel (c, y, x) at time T (us) is ``sum over its events e of exp(-(T - t_e) / tau)``,
c = 1 for ON events and 0 for OFF. As in the SNN, the map is stored scaled and never decayed per
event: ``acc = sum exp((t_e - t0) / tau)`` against a reference time ``t0``, read as
``acc * exp(-(T - t0) / tau)``. An event costs one exp and one add; when ``(t - t0) / tau``
exceeds ``RENORM`` the whole map is rescaled once and ``t0`` moves to ``t``, which keeps ``acc``
far from float64 overflow.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

RENORM = 32.0  # rescale the map when an event's weight would exceed exp(RENORM)
FAINT = 1.0 / 512  # below this summed value a pixel renders as the background (255 * FAINT < 0.5)


def frame_new(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A fresh accumulator: float64 (2, height, width) zeros and the reference time ``t0`` [1] (us)."""
    return np.zeros((2, height, width), np.float64), np.zeros(1, np.float64)


@njit(cache=True, nogil=True)
def accumulate(acc, t0, last, t, x, y, p, tau):
    """Add events (t us, x, y, p: nonzero is ON) to ``acc`` with decay constant ``tau`` (us).

    Also stores each event's time in ``last[y, x]`` (int64, height x width: the surface of
    active events of both polarities, for the time-surface panel). Events outside the map are
    skipped. ``t0`` is updated in place on renormalisation. Events sharing a timestamp share
    one exp.
    """
    height, width = acc.shape[1], acc.shape[2]
    flat = acc.reshape(-1)
    ref = t0[0]
    t_prev = 0
    w = -1.0  # no weight computed yet
    for i in range(t.shape[0]):
        xi, yi = x[i], y[i]
        if xi < 0 or yi < 0 or xi >= width or yi >= height:
            continue
        if w < 0.0 or t[i] != t_prev:
            t_prev = t[i]
            e = (t_prev - ref) / tau
            if e > RENORM:
                scale = math.exp(-e)
                for k in range(flat.shape[0]):
                    flat[k] *= scale
                ref = float(t_prev)
                e = 0.0
            w = math.exp(e)
        acc[1 if p[i] else 0, yi, xi] += w
        last[yi, xi] = t[i]
    t0[0] = ref


def decay_scale(t0: np.ndarray, now_us: float, tau: float) -> float:
    """The factor turning the stored map into values at ``now_us``."""
    return math.exp(-(now_us - t0[0]) / tau)


@njit(cache=True, nogil=True)
def render(acc, scale, background, on, off, out):
    """Colour the map into ``out`` (uint8, height x width x 3).

    Each polarity's value ``v = min(1, acc * scale)`` blends its colour over the background:
    ``background + v_on (on - background) + v_off (off - background)``, rounded and clipped to
    0..255. A pixel without events is exactly the background colour.
    """
    height, width = acc.shape[1], acc.shape[2]
    empty = np.empty(3, np.uint8)
    for k in range(3):
        empty[k] = np.uint8(min(255.0, max(0.0, background[k] + 0.5)))
    for yi in range(height):
        for xi in range(width):
            v_on = min(1.0, acc[1, yi, xi] * scale)
            v_off = min(1.0, acc[0, yi, xi] * scale)
            if v_on + v_off < FAINT:  # shifts every channel by less than 0.5: the background
                for k in range(3):
                    out[yi, xi, k] = empty[k]
                continue
            for k in range(3):
                value = background[k] + v_on * (on[k] - background[k]) + v_off * (off[k] - background[k])
                out[yi, xi, k] = np.uint8(min(255.0, max(0.0, value + 0.5)))
