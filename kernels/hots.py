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

from kernels.snn_input import channel
from kernels.timesurface import NEVER

MERGE, SAME, ALL = 0, 1, 2
MODES = {"merge": MERGE, "same": SAME, "all": ALL}
REBASE = 500.0  # time constants between rescalings; exp(500) ~ 1e217 stays finite in float64
BLOCK = 64  # events whose distances are computed together when not learning
# a block of fewer events is decided by ``_exact`` alone: a ``_screen`` pass costs about what
# three ``_exact`` decisions do, however few events it holds (the winners are the same)
SCREEN_MIN = 4
TILE_PROTOS, TILE_ROWS = 4, 4  # prototypes and surface rows per pass of ``_screen``


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
    events at a time are found together (``_screen``, float32, then ``_exact``, float64, for the
    events float32 cannot decide). The winner minimises |C_j|^2 - 2 C_j . S, i.e. the Euclidean
    distance |C_j - S|, in float64, the first of equal ones.
    """
    norms, weights, start, margin = screening_tables(protos)
    _layer(t, x, y, c, surf, clock, radius, tau, mode, protos, hits, learn, norms, weights,
           start, margin, out_f)


@njit(cache=True, nogil=True, error_model="numpy")
def hots_records(records, surf, clock, radius, tau, mode, protos, hits, learn, norms, weights,
                 start, margin, out):
    """``hots_layer`` on a structured array of events (fields t, x, y and p) or feature events
    (f instead of p), in one compiled call: writes the feature events (t, x, y, f = winner) to
    the structured ``out`` (as long as ``records``). ``norms``, ``weights``, ``start`` and
    ``margin`` are ``screening_tables(protos)``, computed once by the caller for fixed
    prototypes; while learning the kernel keeps ``norms`` equal to the prototypes' (``weights``
    and ``start`` are not used then)."""
    n = len(records)
    t, x, y = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    c, f = np.empty(n, np.int64), np.empty(n, np.int64)
    for i in range(n):
        t[i], x[i], y[i], c[i] = records[i].t, records[i].x, records[i].y, channel(records, i)
    _layer(t, x, y, c, surf, clock, radius, tau, mode, protos, hits, learn, norms, weights,
           start, margin, f)
    for i in range(n):
        record = out[i]
        record.t, record.x, record.y, record.f = t[i], x[i], y[i], f[i]


@njit(cache=True, nogil=True, error_model="numpy")
def screening_tables(protos):
    """What the winner search needs of the (dim, N) prototypes: ``norms`` (|C_j|^2, float64),
    and for the float32 screening the prototypes zero-padded to TILE_ROWS x TILE_PROTOS
    multiples (``weights``, float32 (padded dim, tiles)), -|C_j|^2 / 2 as the start of each sum
    (``start``, -inf for the padding prototypes) and the lead above which a float32 winner is
    the exact one (``margin``)."""
    dim, n_proto = protos.shape
    norms = np.zeros(n_proto)
    for j in range(n_proto):
        for k in range(dim):
            norms[j] += protos[k, j] * protos[k, j]
    padded = -(-dim // TILE_ROWS) * TILE_ROWS
    tiles = -(-n_proto // TILE_PROTOS) * TILE_PROTOS
    weights = np.zeros((padded, tiles), np.float32)
    start = np.full(tiles, -np.inf, np.float32)
    bound = 0.0
    for j in range(n_proto):
        size = 0.5 * norms[j]
        for k in range(dim):
            weights[k, j] = protos[k, j]
            size += abs(protos[k, j])
        start[j] = -0.5 * norms[j]
        bound = max(bound, size)
    # |float32 - exact| of one value v_j = C_j . S - |C_j|^2 / 2 is at most (dim + 6) u
    # (|C_j|^2 / 2 + sum |C_j|) for 0 <= S <= 1, u = 2^-24; a float32 lead larger than twice that
    # (``margin``, with room to spare) is the exact winner, and by far the float64 one too
    margin = 2.0 * 1.01 * (dim + 8) * 2.0**-24 * bound + 1e-30
    return norms, weights, start, margin


@njit(cache=True, nogil=True, error_model="numpy")
def _layer(t, x, y, c, surf, clock, radius, tau, mode, protos, hits, learn, norms, weights,
           start, margin, out_f):
    """The body of ``hots_layer``, with the prototypes' ``screening_tables`` given."""
    dim, n_proto = protos.shape
    side = 2 * radius + 1
    _, rows, cols = surf.shape
    flat = surf.reshape(-1)
    block = 1 if learn else BLOCK
    # column e: map values around event e of the block (columns past the block's events are
    # never read, so the array need not be cleared)
    raw = np.empty((dim, block))
    raw_flat, stride = raw.reshape(-1), np.uint64(block)
    decay = np.empty(block)  # 1 / exp((t - t0) / tau) of each event: S = raw * decay
    offsets = np.empty(dim, np.uint64)  # of the surface pixels from the top-left one in ``flat``
    for k in range(dim):
        offsets[k] = ((k // (side * side)) * rows + k // side % side) * cols + k % side
    score, surface = np.empty(n_proto), np.empty(dim)
    padded = weights.shape[0]
    values = np.empty((padded, block), np.float32)
    sums = np.empty((TILE_PROTOS, block), np.float32)
    top, second = np.empty(block, np.float32), np.empty(block, np.float32)
    best, dots = np.empty(block, np.int64), np.empty(n_proto)
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
            continue
        if m < SCREEN_MIN:
            for e in range(m):
                out_f[first + e] = _exact(raw, e, decay[e], protos, norms, dots)
            continue
        _screen(raw, decay, m, weights, start, values, sums, top, second, best)
        for e in range(m):
            if top[e] - second[e] > margin:
                out_f[first + e] = best[e]
            else:
                out_f[first + e] = _exact(raw, e, decay[e], protos, norms, dots)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _screen(raw, decay, m, weights, start, values, sums, top, second, best):
    """Float32 pass over the first ``m`` events of a block (columns of ``raw``), fixed prototypes.

    Writes, per event e, the largest v_j = C_j . S - |C_j|^2 / 2 (the nearest prototype has the
    largest), ``top[e]``, its index ``best[e]`` (the first of equal ones) and the second largest
    v, ``second[e]``. S = raw * decay is rounded to float32 in ``values`` (rows beyond the
    surface stay 0), so 0 <= S <= 1 whatever the map's scale. The winners are independent, so the
    innermost loops run across the events of the block (vector multiply-adds, no dependent
    chains): ``TILE_PROTOS`` running sums (``sums``) take ``TILE_ROWS`` rows of ``values`` per
    pass, then update the running maxima. Unsigned flat indices: numba skips negative-index
    wraparound.
    """
    dim = raw.shape[0]
    padded, tiles = weights.shape
    stride = np.uint64(BLOCK)  # a constant: LLVM sees that the rows of one array never overlap
    raw_flat, values_flat, sums_flat = raw.reshape(-1), values.reshape(-1), sums.reshape(-1)
    for k in range(dim):
        row = np.uint64(k) * stride
        for e in range(np.uint64(m)):
            values_flat[row + e] = np.float32(raw_flat[row + e] * decay[e])
    for k in range(dim, padded):
        values[k, :m] = 0.0
    top[:m] = -np.inf
    second[:m] = -np.inf
    best[:m] = 0
    s1 = stride
    s2 = s1 + stride
    s3 = s2 + stride
    for j in range(0, tiles, 4):  # TILE_PROTOS = 4
        b0, b1, b2, b3 = start[j], start[j + 1], start[j + 2], start[j + 3]
        for e in range(np.uint64(m)):
            sums_flat[e] = b0
            sums_flat[s1 + e] = b1
            sums_flat[s2 + e] = b2
            sums_flat[s3 + e] = b3
        for k in range(0, padded, 4):  # TILE_ROWS = 4
            w00, w01, w02, w03 = (weights[k, j], weights[k, j + 1], weights[k, j + 2],
                                  weights[k, j + 3])
            w10, w11, w12, w13 = (weights[k + 1, j], weights[k + 1, j + 1], weights[k + 1, j + 2],
                                  weights[k + 1, j + 3])
            w20, w21, w22, w23 = (weights[k + 2, j], weights[k + 2, j + 1], weights[k + 2, j + 2],
                                  weights[k + 2, j + 3])
            w30, w31, w32, w33 = (weights[k + 3, j], weights[k + 3, j + 1], weights[k + 3, j + 2],
                                  weights[k + 3, j + 3])
            r0 = np.uint64(k) * stride
            for e in range(np.uint64(m)):
                v0 = values_flat[r0 + e]
                v1 = values_flat[r0 + s1 + e]
                v2 = values_flat[r0 + s2 + e]
                v3 = values_flat[r0 + s3 + e]
                sums_flat[e] = sums_flat[e] + v0 * w00 + v1 * w10 + v2 * w20 + v3 * w30
                sums_flat[s1 + e] = sums_flat[s1 + e] + v0 * w01 + v1 * w11 + v2 * w21 + v3 * w31
                sums_flat[s2 + e] = sums_flat[s2 + e] + v0 * w02 + v1 * w12 + v2 * w22 + v3 * w32
                sums_flat[s3 + e] = sums_flat[s3 + e] + v0 * w03 + v1 * w13 + v2 * w23 + v3 * w33
        for e in range(np.uint64(m)):  # branch-free: the first of equal values stays
            hi, lo, arg = top[e], second[e], best[e]
            for q in range(4):
                v = sums_flat[np.uint64(q) * stride + e]
                lo = max(lo, min(v, hi))
                arg = j + q if v > hi else arg
                hi = max(hi, v)
            top[e], second[e], best[e] = hi, lo, arg


@njit(cache=True, nogil=True, error_model="numpy")
def _exact(raw, e, decay, protos, norms, dots):
    """The float64 winner of event ``e`` (column of ``raw``): the smallest
    |C_j|^2 - 2 decay (C_j . raw), dot products summed in surface order, the first of equal ones.
    ``dots`` (N,) is scratch."""
    dim, n_proto = protos.shape
    proto, n = protos.reshape(-1), np.uint64(n_proto)
    dots[:] = 0.0
    for k in range(dim):
        r = raw[k, e]
        row = np.uint64(k) * n
        for j in range(n):  # unsigned: a vector loop (each sum still in surface order)
            dots[j] += r * proto[row + j]
    best, low = 0, norms[0] - 2.0 * decay * dots[0]
    for j in range(1, n_proto):
        score = norms[j] - 2.0 * decay * dots[j]
        if score < low:
            best, low = j, score
    return best


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
