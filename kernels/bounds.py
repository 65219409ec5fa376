"""Coordinate range of event records, in one pass (used to validate every received packet)."""

from __future__ import annotations

import numpy as np
from numba import njit, types

X_COLUMN, Y_COLUMN = 4, 5  # int16 columns of x (byte 8) and y (byte 10) in 16-byte records

# read-only argument type: accepts received (read-only) payload buffers and writable arrays alike
_SIGNATURE = types.UniTuple(types.int16, 4)(types.Array(types.int16, 2, "C", readonly=True))


# Compiled eagerly (from the cache after the first run) when imported, so the first packet a
# receiver validates does not pay for compilation.
@njit([_SIGNATURE], cache=True, nogil=True)
def xy_range(words: np.ndarray) -> tuple[int, int, int, int]:
    """(x min, x max, y min, y max) of 16-byte records viewed as an (n, 8) int16 matrix.

    The records must hold x and y as int16 at bytes 8 and 10 (the ``events`` and ``features``
    layouts); ``words`` must be C-contiguous with at least one row.
    """
    x_low = x_high = words[0, X_COLUMN]
    y_low = y_high = words[0, Y_COLUMN]
    for i in range(1, words.shape[0]):  # branch-free min/max with fixed columns: vectorises
        x = words[i, X_COLUMN]
        y = words[i, Y_COLUMN]
        x_low = min(x_low, x)
        x_high = max(x_high, x)
        y_low = min(y_low, y)
        y_high = max(y_high, y)
    return x_low, x_high, y_low, y_high
