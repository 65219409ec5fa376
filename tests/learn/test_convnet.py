"""The conversion method's convolutional classifier (``--classifier conv``) on real N-MNIST samples.

The ANN's conv layers (``pipeline.learn.convert.cross_correlate``) are compared with a plain loop
over the definition of ``kernels.conv`` and with torch's ``conv2d`` on the feature maps of real
samples; the training translations move maps by whole cells; and a small model trained through
``pipeline.learn.train`` (100 samples, fold 0 of 10, few epochs, a fixed decoder lead) is two conv
layers and a dense one in the exact core, whose spikes decide samples it never saw as its ANN does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernels.conv import ConvShape, channel_last_order
from pipeline.core.model import load_model
from pipeline.learn import convnet
from pipeline.learn.classifier import TrainParams
from pipeline.learn.convert import cross_correlate
from pipeline.learn.evaluate import evaluate
from pipeline.learn.features import FeatureSpec, extract, feature_matrix, select
from pipeline.learn.train import train
from tests.conftest import NMNIST_TRAIN, ROOT

SPEC = FeatureSpec(cell=3)  # 12 x 12 cells of 64 prototypes


@pytest.fixture(scope="module")
def rows(recordings):
    """Whole-sample feature vectors of 20 samples (3-pixel cells, the shipped prototypes)."""
    with np.load(ROOT / "recordings" / "model.npz") as archive:
        prototypes = archive["hots_prototypes"]
    files = select(NMNIST_TRAIN, 50, 0, test=True)
    inputs, _ = extract(files, SPEC, prototypes, desc="")
    return feature_matrix(inputs, SPEC.n_inputs, (1.0,))


def reference(a: np.ndarray, kernel: np.ndarray, conv: ConvShape) -> np.ndarray:
    """``kernels.conv``'s formula term by term: out[o, oy, ox] = sum over (c, ky, kx) of
    K[o, c, ky, kx] * in[c, oy * sy - py + ky, ox * sx - px + kx], zero outside the map."""
    c, h, w = conv.in_shape
    (sy, sx), (py, px) = conv.stride, conv.padding
    o, _, kh, kw = kernel.shape
    oh, ow = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
    maps = a.reshape(-1, h, w, c)
    out = np.zeros((len(a), oh, ow, o))
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    y, x = oy * sy - py + ky, ox * sx - px + kx
                    if 0 <= y < h and 0 <= x < w:
                        out[:, oy, ox] += maps[:, y, x] @ kernel[:, :, ky, kx].T
    return out.reshape(len(a), -1)


@pytest.mark.parametrize("kernel_side, stride, padding", [(5, 2, 2), (3, 1, 1), (4, 3, 0)])
def test_cross_correlation_equals_its_definition_and_torch(rows, kernel_side, stride, padding):
    conv = ConvShape((SPEC.n_prototypes, 12, 12), (stride, stride), (padding, padding))
    kernel = np.random.default_rng(kernel_side).normal(
        size=(6, SPEC.n_prototypes, kernel_side, kernel_side))
    ours = cross_correlate(rows, kernel, conv)
    np.testing.assert_allclose(ours, reference(rows, kernel, conv), atol=1e-12)
    maps = torch.from_numpy(
        rows.reshape(-1, 12, 12, SPEC.n_prototypes).transpose(0, 3, 1, 2).copy())
    peer = F.conv2d(maps, torch.from_numpy(kernel), stride=stride, padding=padding).numpy()
    out_map = peer.shape[1:]
    np.testing.assert_allclose(ours, peer.reshape(len(rows), -1)[:, channel_last_order(out_map)],
                               atol=1e-12)


def test_training_translations_move_maps_by_whole_cells_with_zeros_coming_in():
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4) + 1
    moved = convnet.translated(maps, np.array([[1, -1], [0, 0]]))
    assert torch.equal(moved[0, :, 1:, :3], maps[0, :, :3, 1:])  # down one row, left one column
    assert not moved[0, :, 0].any() and not moved[0, :, :, 3].any()
    assert torch.equal(moved[1], maps[1])


def test_a_conv_model_is_two_conv_layers_and_a_dense_one_in_the_exact_core(tmp_path):
    """Trained on 100 samples, the model file holds the conv layers of ``convnet.LAYERS``; the
    exact SNN decides the 30 samples it never saw, at their end, as the ANN does on all but a
    few, and better than chance."""
    files = select(NMNIST_TRAIN, 10, 0, test=True)
    others = [f for i, f in enumerate(select(NMNIST_TRAIN, 10, 1, test=True)) if i % 10 < 3]
    path = tmp_path / "conv.npz"
    train(files, path, SPEC, TrainParams(classifier="conv", hidden=8, epochs=10,
                                         prototype_samples=10, k=16))
    model = load_model(path)
    convs = [model.layer_conv(l) for l in range(2)]
    assert [[np.ravel(v).tolist() for v in conv] for conv in convs] == [
        [[64, 12, 12], [2, 2], [2, 2]], [[8, 6, 6], [1, 1], [1, 1]]]
    assert model.layer_conv(2) is None
    assert [w.shape for w in model.weights] == [(8, 64, 5, 5), (8, 8, 3, 3), (288, 10)]
    metrics = evaluate(path, others).metrics
    assert metrics["accuracy_final"] >= 0.5
    assert abs(metrics["accuracy_final"] - metrics["accuracy_ann"]) <= 0.1
