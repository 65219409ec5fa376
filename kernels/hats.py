"""HATS: histograms of averaged time surfaces (Sironi et al., CVPR 2018), streaming.

The sensor is split into cells of K x K pixels (the last row/column of cells may be cut by the
sensor border). Each cell C keeps a local memory M_C of its past events. For every event e_i in C
its local time surface is, for offsets z in [-rho, rho]^2 and channel (polarity) q,

    T_i(z, q) = sum over e_j in M_C with x_j = x_i + z, p_j = q, t_j in [t_i - delta_t, t_i)
                of exp(-(t_i - t_j) / tau)

and the cell histogram is h_C = (1 / |C|) * sum over e_i in C of T_i, |C| the number of events of
both polarities in C (the paper's Algorithm 1). Only neighbours inside the same cell count (the
local memory), the event itself and events at the very same microsecond are excluded by the
half-open window, and pixels outside the sensor or the cell contribute nothing.

Streaming: ``hats_update`` consumes events in time order and accumulates the sums; the histogram
can be read at any moment with ``hats_histogram`` (a normalised copy). The local memory is a ring
buffer per cell holding only events younger than delta_t; when a ring is full of such events the
update stops early and ``HatsState.update`` doubles the capacity, so the result stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def hats_update(t, x, y, p, cell, n_cols, rho, tau, window,
                ring_t, ring_x, ring_y, ring_p, head, size, sums, counts):
    """Accumulate the local time surfaces of events (t, x, y, p) into ``sums``.

    ``cell`` is K (pixels), ``n_cols`` the number of cells per row, ``rho`` the surface radius
    (pixels), ``tau`` and ``window`` (delta_t) in us. ``sums`` is (cells, 2, 2 rho + 1, 2 rho + 1)
    float64, ``counts`` (cells,) int64. Returns how many events were consumed: fewer than given
    when a cell's ring buffer (capacity ``ring_t.shape[1]``) is full of events younger than
    ``window``; the caller grows the rings and calls again with the rest.
    """
    capacity = ring_t.shape[1]
    wrap = capacity - 1  # capacity is a power of two: index & wrap == index % capacity
    for i in range(t.shape[0]):
        ti, xi, yi = t[i], x[i], y[i]
        c = (yi // cell) * n_cols + xi // cell
        # forget events older than the window: they can never count again (time is monotonic)
        h, n = head[c], size[c]
        while n > 0 and ring_t[c, h] < ti - window:
            h = (h + 1) & wrap
            n -= 1
        head[c], size[c] = h, n
        if n == capacity:
            return i
        for k in range(n):
            j = (h + k) & wrap
            tj = ring_t[c, j]
            dx = ring_x[c, j] - xi
            dy = ring_y[c, j] - yi
            if tj < ti and -rho <= dx <= rho and -rho <= dy <= rho:
                sums[c, ring_p[c, j], dy + rho, dx + rho] += math.exp(-(ti - tj) / tau)
        j = (h + n) & wrap
        ring_t[c, j], ring_x[c, j], ring_y[c, j], ring_p[c, j] = ti, xi, yi, p[i]
        size[c] = n + 1
        counts[c] += 1
    return t.shape[0]


def hats_histogram(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The HATS histograms h_C = sums_C / |C| (cells with no events stay 0), float32."""
    return (sums / np.maximum(counts, 1)[:, None, None, None]).astype(np.float32)


@dataclass
class HatsState:
    """Parameters and plain-array state of one streaming HATS computation.

    ``cell`` K and ``rho`` in pixels, ``tau`` and ``window`` (delta_t) in us.
    """

    width: int
    height: int
    cell: int
    rho: int
    tau: float
    window: int
    capacity: int = 64  # initial ring size per cell, rounded up to a power of two

    def __post_init__(self):
        self.capacity = 1 << max(self.capacity - 1, 0).bit_length()
        if self.rho < 0 or 2 * self.rho + 1 > self.cell:
            raise ValueError(f"HATS needs 2 rho + 1 <= cell (rho={self.rho}, cell={self.cell})")
        self.n_cols = -(-self.width // self.cell)
        self.n_rows = -(-self.height // self.cell)
        self.reset()

    @property
    def n_cells(self) -> int:
        return self.n_cols * self.n_rows

    def reset(self) -> None:
        """Forget every event (start of a new sample)."""
        n, s = self.n_cells, 2 * self.rho + 1
        self.ring_t = np.zeros((n, self.capacity), np.int64)
        self.ring_x = np.zeros((n, self.capacity), np.int16)
        self.ring_y = np.zeros((n, self.capacity), np.int16)
        self.ring_p = np.zeros((n, self.capacity), np.int8)
        self.head = np.zeros(n, np.int64)
        self.size = np.zeros(n, np.int64)
        self.sums = np.zeros((n, 2, s, s), np.float64)
        self.counts = np.zeros(n, np.int64)

    def update(self, events: np.ndarray) -> None:
        """Consume canonical events (sorted by t) into the histogram sums."""
        t, x, y, p = events["t"], events["x"], events["y"], events["p"]
        done = 0
        while done < len(t):
            done += hats_update(t[done:], x[done:], y[done:], p[done:], self.cell, self.n_cols,
                                self.rho, self.tau, self.window, self.ring_t, self.ring_x,
                                self.ring_y, self.ring_p, self.head, self.size, self.sums,
                                self.counts)
            if done < len(t):
                self._grow()

    def _grow(self) -> None:
        """Double the ring capacity, unrolling each ring so its oldest event is at index 0."""
        order = (self.head[:, None] + np.arange(self.capacity)[None, :]) % self.capacity
        self.capacity *= 2
        for name in ("ring_t", "ring_x", "ring_y", "ring_p"):
            old = getattr(self, name)
            new = np.zeros((old.shape[0], self.capacity), old.dtype)
            new[:, : old.shape[1]] = np.take_along_axis(old, order, axis=1)
            setattr(self, name, new)
        self.head[:] = 0

    def histogram(self) -> np.ndarray:
        """The current histograms, float32 (cells, 2, 2 rho + 1, 2 rho + 1), cells row-major."""
        return hats_histogram(self.sums, self.counts)
