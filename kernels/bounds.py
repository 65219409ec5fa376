"""Coordinate range of event records, in one pass (used to validate every received packet)."""

from __future__ import annotations

import numpy as np
from numba import njit, types

# read-only array argument: accepts received (read-only) payload buffers and writable arrays alike
_SIGNATURE = types.UniTuple(types.int16, 4)(types.Array(types.int16, 2, "A", readonly=True),
                                            types.int64, types.int64)


# Compiled eagerly (from the cache after the first run) when imported, so the first packet a
# receiver validates does not pay for compilation.
@njit([_SIGNATURE], cache=True, nogil=True)
def xy_range(words: np.ndarray, x_col: int, y_col: int) -> tuple[int, int, int, int]:
    """(x min, x max, y min, y max) of records viewed as an (n, k) int16 matrix.

    ``x_col``/``y_col`` are the int16 column indices of the x and y fields (byte offset / 2).
    ``words`` must have at least one row.
    """
    x_low = x_high = words[0, x_col]
    y_low = y_high = words[0, y_col]
    for i in range(1, words.shape[0]):
        x = words[i, x_col]
        y = words[i, y_col]
        if x < x_low:
            x_low = x
        elif x > x_high:
            x_high = x
        if y < y_low:
            y_low = y
        elif y > y_high:
            y_high = y
    return x_low, x_high, y_low, y_high
