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
can be read at any moment with ``hats_histogram`` (a normalised copy).

How, without scanning the memory per event: the inner sum of T_i at one pixel and polarity is
``exp(-(t_i - t0) / tau) * A[y, x, q]`` with ``A[y, x, q] = sum_j exp((t_j - t0) / tau)`` over
that pixel's events in the window, for a reference time t0 (one exp per event, rescaled once every
``REBASE`` tau like the HOTS map). A neighbour is in the local memory of C exactly when its pixel
lies in C, so an event reads A over its (2 rho + 1)^2 pixels clipped to its cell. The memories of all cells together are one FIFO of the events
younger than delta_t, in time order: an event is added to ``A`` once (after every event of its
own microsecond has been read, which excludes same-time neighbours) and subtracted once when it
leaves the window; a pixel with no event left in the window is set back to exactly 0. The FIFO is
a ring buffer; when it is full the update stops early and ``HatsState.update`` doubles the
capacity, so the result stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from kernels.hots import REBASE
from kernels.timesurface import NEVER

# fields of the int64 ``book`` array: ring head and size, entries at the tail not yet added to
# ``acc`` (the events of the latest microsecond), and the reference time t0
HEAD, SIZE, PENDING, T0 = range(4)


@njit(cache=True, nogil=True)
def hats_update(t, x, y, p, cell, rho, tau, window, acc, live, ring_t, ring_i, ring_v, book,
                sums, counts):
    """Accumulate the local time surfaces of events (t, x, y, p) into ``sums``.

    ``cell`` is K (pixels), ``rho`` the surface radius (pixels), ``tau`` and ``window``
    (delta_t) in us. ``acc`` is the (height, width, 2) float64 map A (see the module doc;
    polarity last, so one row of a surface is one contiguous run), ``live`` its (height, width, 2)
    int64 count of events in the window, ``ring_*`` the FIFO (time, flat index into ``acc``, added
    value), ``book`` the int64 fields ``HEAD``, ``SIZE``, ``PENDING``, ``T0``. ``sums`` is
    (cells, 2 rho + 1, 2 rho + 1, 2) float64 (dy, dx, polarity), ``counts`` (cells,) int64.
    Returns how many events were consumed: fewer than given when the ring (capacity
    ``ring_t.shape[0]``) is full of events younger than ``window``; the caller grows the ring and
    calls again with the rest.
    """
    height, width, _ = acc.shape
    n_cols = -(-width // cell)
    capacity = ring_t.shape[0]
    wrap = capacity - 1  # capacity is a power of two: index & wrap == index % capacity
    side = 2 * rho + 1
    flat, alive, bins = acc.reshape(-1), live.reshape(-1), sums.reshape(-1)
    for i in range(t.shape[0]):
        ti, xi, yi = t[i], np.int64(x[i]), np.int64(y[i])
        head, size, pending = book[HEAD], book[SIZE], book[PENDING]
        if pending > 0 and ring_t[(head + size - 1) & wrap] < ti:  # a new microsecond
            for k in range(size - pending, size):
                j = (head + k) & wrap
                flat[ring_i[j]] += ring_v[j]
                alive[ring_i[j]] += 1
            pending = 0
        if ti - book[T0] > REBASE * tau:
            scale = math.exp(-(ti - book[T0]) / tau)
            acc *= scale
            for k in range(size):
                ring_v[(head + k) & wrap] *= scale
            book[T0] = ti
        while size > 0 and ring_t[head] < ti - window:  # leaves the window (never a pending one)
            j = ring_i[head]
            alive[j] -= 1
            flat[j] = flat[j] - ring_v[head] if alive[j] > 0 else 0.0
            head = (head + 1) & wrap
            size -= 1
        book[HEAD], book[SIZE], book[PENDING] = head, size, pending
        if size == capacity:
            return i
        now = math.exp((ti - book[T0]) / tau)
        decay = 1.0 / now
        cx, cy = xi // cell, yi // cell
        c = cy * n_cols + cx
        x0, x1 = max(xi - rho, cx * cell), min(xi + rho, cx * cell + cell - 1, width - 1)
        y0, y1 = max(yi - rho, cy * cell), min(yi + rho, cy * cell + cell - 1, height - 1)
        to = np.uint64(2 * ((c * side + y0 - yi + rho) * side + x0 - xi + rho))
        at = np.uint64(2 * (y0 * width + x0))
        for _ in range(y1 - y0 + 1):
            for k in range(np.uint64(2 * (x1 - x0 + 1))):
                bins[to + k] += flat[at + k] * decay
            to += np.uint64(2 * side)
            at += np.uint64(2 * width)
        counts[c] += 1
        j = (head + size) & wrap
        ring_t[j], ring_i[j], ring_v[j] = ti, (yi * width + xi) * 2 + p[i], now
        book[SIZE], book[PENDING] = size + 1, pending + 1
    return t.shape[0]


def hats_histogram(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The HATS histograms h_C = sums_C / |C| (cells with no events stay 0), float32, in the
    paper's (cells, 2, 2 rho + 1, 2 rho + 1) layout from ``hats_update``'s (dy, dx, polarity)."""
    normalised = sums / np.maximum(counts, 1)[:, None, None, None]
    return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2), dtype=np.float32)


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
    capacity: int = 1024  # initial FIFO size (events younger than delta_t), rounded to 2**n

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
        self.acc = np.zeros((self.height, self.width, 2), np.float64)
        self.live = np.zeros((self.height, self.width, 2), np.int64)
        self.ring_t = np.zeros(self.capacity, np.int64)
        self.ring_i = np.zeros(self.capacity, np.int64)
        self.ring_v = np.zeros(self.capacity, np.float64)
        self.book = np.array([0, 0, 0, NEVER], np.int64)
        self.sums = np.zeros((n, s, s, 2), np.float64)
        self.counts = np.zeros(n, np.int64)

    def update(self, events: np.ndarray) -> None:
        """Consume canonical events (sorted by t) into the histogram sums."""
        t, x, y, p = events["t"], events["x"], events["y"], events["p"]
        done = 0
        while done < len(t):
            done += hats_update(t[done:], x[done:], y[done:], p[done:], self.cell, self.rho,
                                self.tau, self.window, self.acc, self.live, self.ring_t,
                                self.ring_i, self.ring_v, self.book, self.sums, self.counts)
            if done < len(t):
                self._grow()

    def _grow(self) -> None:
        """Double the ring capacity, unrolling it so its oldest event is at index 0."""
        order = (self.book[HEAD] + np.arange(self.capacity)) % self.capacity
        self.capacity *= 2
        for name in ("ring_t", "ring_i", "ring_v"):
            old = getattr(self, name)
            new = np.zeros(self.capacity, old.dtype)
            new[: old.shape[0]] = old[order]
            setattr(self, name, new)
        self.book[HEAD] = 0

    def histogram(self) -> np.ndarray:
        """The current histograms, float32 (cells, 2, 2 rho + 1, 2 rho + 1), cells row-major."""
        return hats_histogram(self.sums, self.counts)
