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
BLOCK = 128  # events whose distances are computed together when not learning


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
    prototype j; ``hits`` (N,) int64 counts wins, 0 marking a prototype not yet initialised. With
    ``learn`` the prototypes are initialised from the first N surfaces and then updated online
    (``_learn``, one event at a time); otherwise they stay fixed and the winners of ``BLOCK``
    events at a time are found together (``_nearest``). The winner minimises
    |C_j|^2 - 2 C_j . S, i.e. the Euclidean distance |C_j - S|, the first of equal ones.
    """
    dim, n_proto = protos.shape
    side = 2 * radius + 1
    _, rows, cols = surf.shape
    flat = surf.reshape(-1)
    block = 1 if learn else BLOCK
    padded = -(-dim // 4) * 4  # ``_nearest`` adds 4 rows at a time; padding rows stay 0
    weights = np.zeros((padded, n_proto))
    weights[:dim] = protos
    raw = np.zeros((padded, block))  # column e: map values around event e of the block
    raw_flat, stride = raw.reshape(-1), np.uint64(block)
    decay = np.empty(block)  # 1 / exp((t - t0) / tau) of each event: S = raw * decay
    dots = np.empty((n_proto, block))
    offsets = np.empty(dim, np.uint64)  # of the surface pixels from the top-left one in ``flat``
    for k in range(dim):
        offsets[k] = ((k // (side * side)) * rows + k // side % side) * cols + k % side
    norms = np.zeros(n_proto)
    for j in range(n_proto):
        for k in range(dim):
            norms[j] += protos[k, j] * protos[k, j]
    score, surface = np.empty(n_proto), np.empty(dim)
    for first in range(0, t.shape[0], block):
        m = min(block, t.shape[0] - first)
        for e in range(m):
            i = first + e
            ti = t[i]
            if ti - clock[0] > REBASE * tau:
                surf *= math.exp(-(ti - clock[0]) / tau)
                clock[0] = ti
            now = math.exp((ti - clock[0]) / tau)
            decay[e] = 1.0 / now
            ci = 0 if mode == MERGE else np.int64(c[i])
            corner = np.int64(y[i]) * cols + x[i]
            flat[ci * rows * cols + corner + radius * cols + radius] = now
            origin = np.uint64((0 if mode == ALL else ci) * rows * cols + corner)
            to = np.uint64(e)
            for k in range(dim):
                raw_flat[to] = flat[origin + offsets[k]]
                to += stride
        if learn:
            out_f[first] = _learn(raw, decay[0], protos, hits, norms, score, surface)
        else:
            _nearest(raw, decay, m, weights, norms, dots, out_f[first:first + m])


@njit(cache=True, nogil=True, error_model="numpy")
def _nearest(raw, decay, m, weights, norms, dots, out_f):
    """Winners of the first ``m`` events of a block (columns of ``raw``) for fixed prototypes.

    The winners are independent, so all dot products are taken with the innermost loop across
    the block: a vector multiply-add streaming over events, where a loop across the prototypes of
    one event would be a chain of dependent sums. Each pass adds 4 rows of ``weights`` (the
    prototypes zero-padded to a multiple of 4 rows), in row order, to cut the loads and stores of
    the running sums. Unsigned flat indices: numba skips negative-index wraparound.
    """
    padded, n_proto = weights.shape
    stride = np.uint64(raw.shape[1])
    raw_flat, dots_flat = raw.reshape(-1), dots.reshape(-1)
    dots[:, :m] = 0.0
    for j in range(n_proto):
        to = np.uint64(j) * stride
        for k in range(0, padded, 4):
            w0, w1 = weights[k, j], weights[k + 1, j]
            w2, w3 = weights[k + 2, j], weights[k + 3, j]
            r0 = np.uint64(k) * stride
            r1 = r0 + stride
            r2 = r1 + stride
            r3 = r2 + stride
            for e in range(np.uint64(m)):
                total = dots_flat[to + e] + raw_flat[r0 + e] * w0
                total += raw_flat[r1 + e] * w1
                total += raw_flat[r2 + e] * w2
                dots_flat[to + e] = total + raw_flat[r3 + e] * w3
    for e in range(m):
        best, low = 0, norms[0] - 2.0 * decay[e] * dots[0, e]
        for j in range(1, n_proto):  # branch-free: the first of equal distances wins
            score = norms[j] - 2.0 * decay[e] * dots[j, e]
            best = j if score < low else best
            low = min(score, low)
        out_f[e] = best


@njit(cache=True, nogil=True, error_model="numpy")
def _learn(raw, decay, protos, hits, norms, score, surface):
    """One learning step on the surface S = raw[:, 0] * decay; returns the winner.

    The first N surfaces initialise the prototypes, then the nearest one moves by the paper's
    rule; ``norms`` follows the prototypes. ``score`` (N,) and ``surface`` (dim,) are scratch.
    """
    dim, n_proto = protos.shape
    for k in range(dim):
        surface[k] = raw[k, 0] * decay
    if hits[n_proto - 1] == 0:
        best = 0
        while hits[best] > 0:
            best += 1
        protos[:, best] = surface
        hits[best] = 1
    else:
        proto = protos.reshape(-1)
        score[:] = norms
        for k in range(dim):
            s2 = 2.0 * surface[k]
            offset = np.uint64(k * n_proto)
            for j in range(n_proto):
                score[np.uint64(j)] -= s2 * proto[offset + np.uint64(j)]
        best = 0
        for j in range(1, n_proto):
            if score[j] < score[best]:
                best = j
        dot, norm_s = 0.0, 0.0
        for k in range(dim):
            dot += protos[k, best] * surface[k]
            norm_s += surface[k] * surface[k]
        beta = dot / math.sqrt(norms[best] * norm_s)
        alpha = 0.01 / (1.0 + hits[best] / 20000.0)
        for k in range(dim):
            protos[k, best] += alpha * (surface[k] - beta * protos[k, best])
        hits[best] += 1
    norms[best] = 0.0
    for k in range(dim):
        norms[best] += protos[k, best] * protos[k, best]
    return best
