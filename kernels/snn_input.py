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
from numba.extending import overload


def n_inputs(width: int, height: int, cell: int, channels: int) -> int:
    """Number of input neurons of the layout."""
    return -(-width // cell) * -(-height // cell) * channels


@njit(cache=True, nogil=True, inline="always")
def input_index(xi, yi, ci, width, height, cell, channels):
    """The input index of one event (x, y px, channel c), or -1 when it maps to none."""
    if xi < 0 or yi < 0 or xi >= width or yi >= height or ci < 0 or ci >= channels:
        return -1
    return ((yi // cell) * ((width + cell - 1) // cell) + xi // cell) * channels + ci


@njit(cache=True, nogil=True)
def map_inputs(x, y, c, width, height, cell, channels, out):
    """Write the input index of each event (x, y, channel c) to ``out``; returns how many were
    dropped (written as -1)."""
    dropped = 0
    for i in range(len(x)):
        out[i] = input_index(x[i], y[i], c[i], width, height, cell, channels)
        dropped += out[i] < 0
    return dropped


def channel(records, i):
    """The channel of record ``i`` of a structured array inside compiled code: ``p`` for camera
    events, ``f`` for feature events (the field a record type has, chosen when compiling)."""
    raise NotImplementedError("compiled code only")


@overload(channel)
def _channel(records, i):
    name = "p" if "p" in records.dtype.fields else "f"

    def impl(records, i):
        return records[i][name]
    return impl
