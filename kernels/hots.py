"""HOTS: one layer of a hierarchy of time surfaces (Lagorce et al., IEEE TPAMI 2017).

For each input event e_i = (t_i, x_i, y_i, c_i) (c a polarity or the feature index emitted by the
previous layer) the layer builds the local time surface around x_i, radius R,

    S_i(u, c) = exp(-(t_i - T(x_i + u, c)) / tau),   u in [-R, R]^2,

where T is the time of the last event at that pixel and channel *including e_i itself* (so the
centre of the event's own channel is 1), T = minus infinity for pixels that never fired (S = 0),
and pixels beyond the sensor border are "no event" (S = 0; never mirrored or clamped). Channel
modes: ``MERGE`` (one channel, polarity ignored), ``SAME`` (only the event's own channel, the
paper's first layer) and ``ALL`` (every channel concatenated, the paper's upper layers).

The surface is matched to the nearest of N prototypes (Euclidean distance) and the layer emits the
feature event (t_i, x_i, y_i, k). Learning follows the paper's online clustering (Algorithm 1):
the first N surfaces become the prototypes, then the winner C_k moves by
``C_k += alpha * (S - beta * C_k)`` with ``beta = C_k . S / (|C_k| |S|)`` and
``alpha = 0.01 / (1 + p_k / 20000)``, p_k the number of times C_k won.

Streaming without per-event decay of the map: the map stores exp((t_j - t0) / tau) for a reference
time t0, so one event costs one exp; when (t - t0) exceeds ``REBASE`` time constants the whole map
is rescaled once to a new t0 (amortised, every ``REBASE * tau`` us of sensor time).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kernels.timesurface import NEVER

MERGE, SAME, ALL = 0, 1, 2
MODES = {"merge": MERGE, "same": SAME, "all": ALL}
REBASE = 500.0  # time constants between rescalings; exp(500) ~ 1e217 stays finite in float64


def surface_dim(channels: int, radius: int, mode: int) -> int:
    """Length of one layer's time-surface vector (and of each prototype)."""
    side = 2 * radius + 1
    return side * side * (channels if mode == ALL else 1)


def hots_map(width: int, height: int, channels: int, radius: int, mode: int):
    """Fresh layer memory: the scaled map (channels, height + 2R, width + 2R), zero = minus
    infinity, padded by R "no event" pixels on every side, and its reference time t0 (NEVER)."""
    n = 1 if mode == MERGE else channels
    surf = np.zeros((n, height + 2 * radius, width + 2 * radius), np.float64)
    return surf, np.array([NEVER], np.int64)


@njit(cache=True, nogil=True, error_model="numpy")
def hots_layer(t, x, y, c, surf, clock, radius, tau, mode, protos, hits, learn, out_f):
    """Run events (t in us, non-decreasing) through one HOTS layer; writes winners to ``out_f``.

    ``surf``/``clock`` come from ``hots_map``. ``protos`` is (dim, N) float64, column j being
    prototype j (this layout makes the distance loop run across prototypes in SIMD); ``hits`` (N,)
    int64 counts wins, 0 marking a prototype not yet initialised. With ``learn`` the prototypes
    are initialised from the first N surfaces and then updated online; otherwise they stay fixed.
    The winner minimises |C_j|^2 - 2 C_j . S, i.e. the Euclidean distance |C_j - S|.
    Hot loops index flat views with unsigned integers so numba skips negative-index wraparound.
    """
    dim, n_proto = protos.shape
    side = 2 * radius + 1
    n_chan, rows, cols = surf.shape
    flat = surf.reshape(-1)
    proto = protos.reshape(-1)
    surface = np.empty(dim)
    score = np.empty(n_proto)
    norms = np.zeros(n_proto)
    for j in range(n_proto):
        for k in range(dim):
            norms[j] += protos[k, j] * protos[k, j]
    for i in range(t.shape[0]):
        ti = t[i]
        if ti - clock[0] > REBASE * tau:
            surf *= math.exp(-(ti - clock[0]) / tau)
            clock[0] = ti
        now = math.exp((ti - clock[0]) / tau)
        inv = 1.0 / now
        ci = 0 if mode == MERGE else np.int64(c[i])
        corner = np.int64(y[i]) * cols + x[i]
        flat[ci * rows * cols + corner + radius * cols + radius] = now
        first, last = (0, n_chan) if mode == ALL else (ci, ci + 1)
        k = np.uint64(0)
        for cc in range(first, last):
            for dy in range(side):
                row = np.uint64((cc * rows + dy) * cols + corner)
                for dx in range(side):
                    surface[k] = flat[row + np.uint64(dx)] * inv
                    k += np.uint64(1)
        if learn and hits[n_proto - 1] == 0:
            best = 0
            while hits[best] > 0:
                best += 1
            protos[:, best] = surface
            hits[best] = 1
        else:
            score[:] = norms
            for k in range(dim):
                s2 = 2.0 * surface[np.uint64(k)]
                offset = np.uint64(k * n_proto)
                for j in range(n_proto):
                    score[np.uint64(j)] -= s2 * proto[offset + np.uint64(j)]
            best = 0
            for j in range(1, n_proto):
                if score[j] < score[best]:
                    best = j
            if learn:
                dot, norm_s = 0.0, 0.0
                for k in range(dim):
                    dot += protos[k, best] * surface[k]
                    norm_s += surface[k] * surface[k]
                beta = dot / math.sqrt(norms[best] * norm_s)
                alpha = 0.01 / (1.0 + hits[best] / 20000.0)
                for k in range(dim):
                    protos[k, best] += alpha * (surface[k] - beta * protos[k, best])
                hits[best] += 1
        if learn:
            norms[best] = 0.0
            for k in range(dim):
                norms[best] += protos[k, best] * protos[k, best]
        out_f[i] = best
