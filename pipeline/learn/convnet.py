"""The convolutional classifier of the conversion method (``--classifier conv``, review 3.2).

The SNN's input map is channel-last cells x prototypes (``kernels.snn_input``), the layout of the
core's conv layers (``kernels.conv``), so a conv layer reads the HOTS feature events directly: an
input event updates only its kernel's neighbourhood. The network, bias-free with ReLU hidden
layers as conversion needs (Diehl et al. 2015; Rueckauer et al. 2017, section 2.2), on the
(prototypes, cells high, cells wide) map of a sample's feature vector:

- conv, ``width`` channels, 5 x 5 cells, stride 2, zero padding 2;
- conv, ``width`` channels, 3 x 3, stride 1, padding 1;
- dense to the classes.

Trained with Adam (Kingma and Ba 2015) on softmax cross-entropy with L2 weight decay, in torch on
the CPU, on the prefix rows of ``Examples.rows``; every row of a mini-batch is translated by a
random whole number of cells in [-``SHIFT_CELLS``, ``SHIFT_CELLS``] along each axis, zeros coming
in at the border (the translations of the training set of LeCun et al. 1998, section III.C,
drawn afresh in every epoch). As in ``classifier.fit``, inputs are scaled by sqrt(n_inputs) while
training and the scale folded into the first kernel after.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kernels.conv import ConvShape, channel_last_order

CONV_WIDTH = 32  # channels of each conv layer unless --hidden says otherwise
LAYERS = ((5, 2, 2), (3, 1, 1))  # per conv layer: kernel side, stride, zero padding (cells)
SHIFT_CELLS = 1  # largest random translation of a training row, cells along each axis


def shapes(in_shape: tuple, width: int) -> tuple[list[ConvShape], tuple]:
    """The ``ConvShape`` of each conv layer of ``LAYERS`` over an input map ``in_shape``
    (channels, height, width), ``width`` channels each, and the last one's output map."""
    out, shape = [], tuple(int(v) for v in in_shape)
    for side, stride, pad in LAYERS:
        out.append(ConvShape(shape, (stride, stride), (pad, pad)))
        shape = (width, (shape[1] + 2 * pad - side) // stride + 1,
                 (shape[2] + 2 * pad - side) // stride + 1)
    return out, shape


def translated(maps: torch.Tensor, shift: np.ndarray) -> torch.Tensor:
    """Every map (rows, C, H, W) moved by ``shift[row]`` = (dy, dx) cells, zeros filling in."""
    m = SHIFT_CELLS
    padded = F.pad(maps, (m, m, m, m))
    height, width = maps.shape[2:]
    out = torch.empty_like(maps)
    for row, (dy, dx) in enumerate(shift):
        out[row] = padded[row, :, m - dy:m - dy + height, m - dx:m - dx + width]
    return out


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, in_shape: tuple, width: int, batches,
        lr: float, l2: float, seed: int) -> tuple[list[np.ndarray], list]:
    """The network of the module doc trained on rows ``x`` (channel-last maps ``in_shape``, each
    a feature vector) of classes ``y``, one Adam step (``lr``, weight decay ``l2``) per row-index
    array of ``batches``. Returns the weights as the core stores them (kernels (out_c, in_c,
    kh, kw), then the dense matrix with its rows in channel-last order) and each layer's
    ``ConvShape`` (None for the dense layer)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    convs, out_map = shapes(in_shape, width)
    channels, height, cols = in_shape
    layers = []
    for shape, (side, stride, pad) in zip(convs, LAYERS):
        layers += [nn.Conv2d(shape.in_shape[0], width, side, stride, pad, bias=False), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(int(np.prod(out_map)), n_classes,
                                                         bias=False))
    scale = float(np.sqrt(x.shape[1]))
    maps = torch.from_numpy(np.ascontiguousarray(
        (x * scale).reshape(-1, height, cols, channels).transpose(0, 3, 1, 2), np.float32))
    target = torch.from_numpy(np.asarray(y, np.int64))
    optimiser = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=l2)
    for batch in batches:
        shift = rng.integers(-SHIFT_CELLS, SHIFT_CELLS + 1, (len(batch), 2))
        loss = F.cross_entropy(net(translated(maps[batch], shift)), target[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    kernels = [m.weight.detach().numpy().astype(np.float64) for m in net
               if isinstance(m, nn.Conv2d)]
    kernels[0] = kernels[0] * scale
    dense = net[-1].weight.detach().numpy().astype(np.float64).T[channel_last_order(out_map)]
    return kernels + [dense], convs + [None]
