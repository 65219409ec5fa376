"""Encoders: analog vectors -> input spike trains (t int64 us, index int64), sorted by time.

- ``poisson``: rate coding; input i fires with rate ``rates[i]`` (Hz) as a Poisson process, i.e.
  exponential inter-spike intervals, over [0, duration_us); spike times are the floor of the
  continuous times. Seeded: the same seed gives the same train.
- ``ttfs_linear``: time to first spike, one spike per input with value x > 0:
  t = round((1 - min(x, x_max) / x_max) * t_max_us).
- ``ttfs_log``: t = round(tau_us * ln(x_max / min(x, x_max))) for x > 0; no spike when t > t_max_us.
- ``rank_order``: one spike per input with x > 0, in decreasing order of x (ties: lower index
  first), the k-th at k * step_us (Thorpe and Gautrais 1998).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _poisson(rates, duration_us, seed, out_t, out_i):
    np.random.seed(seed)
    n = 0
    for i in range(len(rates)):
        if rates[i] <= 0:
            continue
        mean_us = 1e6 / rates[i]
        t = np.random.exponential(mean_us)
        while t < duration_us:
            if n == len(out_t):
                return -1
            out_t[n] = np.int64(t)
            out_i[n] = i
            n += 1
            t += np.random.exponential(mean_us)
    return n


def poisson(rates, duration_us: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Poisson spike trains (rates in Hz) over ``duration_us``; returns (t, index) by time."""
    rates = np.ascontiguousarray(rates, dtype=np.float64)
    capacity = int(rates.clip(0).sum() * duration_us / 1e6 * 1.5) + 64
    while True:
        t, i = np.empty(capacity, np.int64), np.empty(capacity, np.int64)
        n = _poisson(rates, float(duration_us), seed, t, i)
        if n >= 0:
            break
        capacity *= 2
    order = np.argsort(t[:n], kind="stable")
    return t[:n][order], i[:n][order]


def _sorted_train(t: np.ndarray, fires: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = np.flatnonzero(fires)
    order = np.argsort(t[index], kind="stable")
    return t[index][order].astype(np.int64), index[order].astype(np.int64)


def ttfs_linear(x, x_max: float, t_max_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear time-to-first-spike: larger values fire earlier; x >= x_max fires at 0."""
    x = np.asarray(x, dtype=np.float64)
    t = np.rint((1.0 - np.minimum(x, x_max) / x_max) * t_max_us)
    return _sorted_train(t, x > 0)


def ttfs_log(x, x_max: float, tau_us: float, t_max_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Logarithmic time-to-first-spike: t = tau ln(x_max / x), kept when t <= t_max_us."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        t = np.rint(tau_us * np.log(x_max / np.minimum(np.maximum(x, 0.0), x_max)))
    return _sorted_train(np.where(x > 0, t, 0), (x > 0) & (t <= t_max_us))


def rank_order(x, step_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank-order code: inputs with x > 0 fire once each, the k-th largest at k * step_us."""
    x = np.asarray(x, dtype=np.float64)
    index = np.flatnonzero(x > 0)
    index = index[np.argsort(-x[index], kind="stable")]
    return np.arange(len(index), dtype=np.int64) * step_us, index.astype(np.int64)
