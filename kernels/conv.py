"""Convolutional layers of the exact SNN core (``kernels.lif``): geometry and weight layout.

A conv layer maps an input map of shape (C, H, W) to an output map (O, H', W') by
cross-correlation with zero padding, as ``torch.nn.Conv2d`` and NIR's ``Conv2d`` define it
(dilation 1, one group)::

    in'[o, oy, ox] = sum_{c, ky, kx} K[o, c, ky, kx] * in[c, oy * sy - py + ky, ox * sx - px + kx]
    H' = (H + 2 py - kh) // sy + 1,   W' = (W + 2 px - kw) // sx + 1

Event-driven, an input spike at (c, y, x) reaches only the outputs (o, oy, ox) of its kernel's
neighbourhood: those with ``ky = y + py - oy * sy`` in [0, kh) and ``kx = x + px - ox * sx`` in
[0, kw), every o, through the shared weight ``K[o, c, ky, kx]``: at most
``O * ceil(kh / sy) * ceil(kw / sx)`` neurons (the layer's fan-out).

Neuron layout of every map, a conv layer's input and output alike: channel-last,
``index = (y * W + x) * C + c``, the layout of the input mapping (``kernels.snn_input``: cells for
pixels, polarities or features for channels). A map in torch's channel-first order (a tensor of
shape (C, H, W) flattened, as ``nn.Flatten`` or NIR's ``Flatten`` do) is put in this order with
``channel_last_order``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# slots of a layer's row in ``LIFNetwork.geometry`` (int64[L, GEOMETRY_SIZE]; zeros for dense
# layers): input map (channels, height, width), output map, kernel height and width (px), stride
# and zero padding (px, rows then columns)
IN_C, IN_H, IN_W, OUT_C, OUT_H, OUT_W, KH, KW, SY, SX, PY, PX = range(12)
GEOMETRY_SIZE = 12


class ConvShape(NamedTuple):
    """What a conv layer needs besides its kernel: the input map's ``in_shape`` (channels,
    height, width), the ``stride`` (rows, columns) and the zero ``padding`` (rows, columns), px."""

    in_shape: tuple
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)


def _pair(value, name: str) -> tuple[int, int]:
    pair = np.broadcast_to(np.asarray(value), (2,)) if np.ndim(value) == 0 else np.asarray(value)
    if pair.shape != (2,) or not np.issubdtype(pair.dtype, np.integer):
        raise ValueError(f"{name} must be an integer or two integers (rows, columns), got {value!r}")
    return int(pair[0]), int(pair[1])


def geometry(kernel_shape, conv: ConvShape) -> np.ndarray:
    """The layer's ``geometry`` row (int64[GEOMETRY_SIZE]) for a kernel of ``kernel_shape``
    (out channels, in channels, kh, kw); ValueError naming what does not fit."""
    if len(kernel_shape) != 4:
        raise ValueError(f"a conv kernel has shape (out_c, in_c, kh, kw), got {tuple(kernel_shape)}")
    out_c, in_c, kh, kw = (int(n) for n in kernel_shape)
    shape = np.asarray(conv.in_shape)
    if shape.shape != (3,) or not np.issubdtype(shape.dtype, np.integer) or np.any(shape < 1):
        raise ValueError(f"in_shape must be three positive integers (channels, height, width), "
                         f"got {conv.in_shape!r}")
    c, h, w = (int(n) for n in shape)
    sy, sx = _pair(conv.stride, "stride")
    py, px = _pair(conv.padding, "padding")
    if min(out_c, in_c, kh, kw) < 1:
        raise ValueError(f"a conv kernel needs every dimension >= 1, got {tuple(kernel_shape)}")
    if in_c != c:
        raise ValueError(f"the kernel takes {in_c} input channels, in_shape has {c}")
    if sy < 1 or sx < 1 or py < 0 or px < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, got {(sy, sx)} and {(py, px)}")
    out_h, out_w = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {kh} x {kw} kernel does not fit a {h} x {w} map padded by {(py, px)}")
    return np.array([c, h, w, out_c, out_h, out_w, kh, kw, sy, sx, py, px], np.int64)


def n_in(row: np.ndarray) -> int:
    """Input neurons of a conv layer (C * H * W) from its ``geometry`` row."""
    return int(row[IN_C] * row[IN_H] * row[IN_W])


def n_out(row: np.ndarray) -> int:
    """Neurons of a conv layer (O * H' * W') from its ``geometry`` row."""
    return int(row[OUT_C] * row[OUT_H] * row[OUT_W])


def fanout(row: np.ndarray) -> int:
    """Most neurons one input spike reaches: O * (rows reached) * (columns reached)."""
    rows = min(-(-int(row[KH]) // int(row[SY])), int(row[OUT_H]))
    columns = min(-(-int(row[KW]) // int(row[SX])), int(row[OUT_W]))
    return int(row[OUT_C]) * rows * columns


def pack_kernel(kernel) -> np.ndarray:
    """The kernel (out_c, in_c, kh, kw) as the core stores it: float32 in (in_c, kh, kw, out_c)
    order, flat, so the weights one input spike adds at one output position are contiguous."""
    return np.ascontiguousarray(np.transpose(np.asarray(kernel, np.float32), (1, 2, 3, 0))).ravel()


def channel_last_order(shape) -> np.ndarray:
    """For each neuron index of a (C, H, W) map in the channel-last layout, the index of the same
    neuron in the channel-first flattening: ``values_chw.ravel()[channel_last_order(shape)]``
    lists a (C, H, W) array's values in neuron order (int64[C * H * W])."""
    c, h, w = (int(n) for n in shape)
    return np.arange(c * h * w, dtype=np.int64).reshape(c, h, w).transpose(1, 2, 0).ravel()
