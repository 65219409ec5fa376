"""Input mapping: events -> input-neuron indices of the first SNN layer.

One layout serves raw pixels and feature events: the sensor plane is cut into square cells of
``cell`` pixels, and each cell has ``channels`` input neurons, so

    index = ((y // cell) * cells_x + x // cell) * channels + c,   cells_x = ceil(width / cell)

with ``c`` the polarity (raw pixels: cell = 1, channels = 2, so 2 * W * H inputs; p = 1 ON) or
the feature index (HOTS / time-surface features: cell = the feature cell size, channels = the
number of features; a polarity-split feature stage folds the polarity into the feature index).
Events outside the sensor or with a channel outside [0, channels) map to -1 (dropped).
"""

from __future__ import annotations

from numba import njit


def n_inputs(width: int, height: int, cell: int, channels: int) -> int:
    """Number of input neurons of the layout."""
    return -(-width // cell) * -(-height // cell) * channels


@njit(cache=True, nogil=True)
def map_inputs(x, y, c, width, height, cell, channels, out):
    """Write the input index of each event (x, y, channel c) to ``out``; returns how many were
    dropped (written as -1)."""
    cells_x = (width + cell - 1) // cell
    dropped = 0
    for i in range(len(x)):
        xi, yi, ci = x[i], y[i], c[i]
        if xi < 0 or yi < 0 or xi >= width or yi >= height or ci < 0 or ci >= channels:
            out[i] = -1
            dropped += 1
        else:
            out[i] = ((yi // cell) * cells_x + xi // cell) * channels + ci
    return dropped
