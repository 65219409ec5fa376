"""Conv layers of the exact core: against a slow per-neuron reference on N-MNIST events, against
torch's conv2d on spike counts, and through the model file and the snn stage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels import conv, lif
from kernels.conv import ConvShape
from kernels.snn_input import map_inputs
from sensors.readers import read_all


def reached(layer, n_in, pre):
    """(neuron, weight) pairs an input spike of neuron ``pre`` reaches, by neuron index: every
    neuron of a dense layer; for a conv layer every kernel offset tried in turn."""
    w, shape = layer["w"], layer["conv"]
    if shape is None:
        return [(j, float(w[pre, j])) for j in range(w.shape[1])]
    out_c, _, kh, kw = w.shape
    c_in, h, width = shape.in_shape
    (sy, sx), (py, px) = np.broadcast_to(shape.stride, 2), np.broadcast_to(shape.padding, 2)
    c, x, y = pre % c_in, pre // c_in % width, pre // c_in // width
    out_h, out_w = (h + 2 * py - kh) // sy + 1, (width + 2 * px - kw) // sx + 1
    pairs = []
    for ky in range(kh):
        for kx in range(kw):
            oy, ry = divmod(y + py - ky, sy)
            ox, rx = divmod(x + px - kx, sx)
            if ry == 0 and rx == 0 and 0 <= oy < out_h and 0 <= ox < out_w:
                pairs += [((oy * out_w + ox) * out_c + o, float(w[o, c, ky, kx]))
                          for o in range(out_c)]
    return sorted(pairs)


def reference(layers, sizes, t, idx):
    """Slow, obviously-correct simulation, one neuron at a time: each neuron keeps its float64
    potential, the time of its last update and the end of its refractory period, and is decayed
    in closed form towards b * tau when an input reaches it."""
    state = [{"v": [0.0] * n, "last": [t[0]] * n, "until": [-math.inf] * n} for n in sizes[1:]]
    spikes = []
    for te, i in zip(t.tolist(), idx.tolist()):
        if i < 0:
            continue
        current = [i]
        for l, layer in enumerate(layers):
            s, tau = state[l], layer["tau"]
            emitted = []
            for pre in current:
                for j, weight in reached(layer, sizes[l], pre):
                    rest = layer["bias"][j] * tau if math.isfinite(tau) else 0.0
                    s["v"][j] = rest + (s["v"][j] - rest) * math.exp(-(te - s["last"][j]) / tau)
                    s["last"][j] = te
                    if te < s["until"][j]:
                        continue
                    s["v"][j] += weight
                    theta = layer["theta"][j]
                    if s["v"][j] >= theta:
                        spikes.append((te, l, j, s["v"][j]))
                        emitted.append(j)
                        s["v"][j] = 0.0 if layer["reset"] == "zero" else s["v"][j] - theta
                        s["until"][j] = te + layer["ref"]
            current = emitted
    return spikes


def network(layers):
    return lif.make_network([l["w"] for l in layers], [l["theta"] for l in layers],
                            [l["tau"] for l in layers], [l["reset"] for l in layers],
                            [l["ref"] for l in layers], [l["bias"] for l in layers],
                            [l["conv"] for l in layers])


def nmnist_events(recordings, k, n=None):
    files = sorted((recordings / "nmnist" / "Train").glob("*/*.bin"))
    reader, ev = read_all(files[k])
    ev = ev[:n]
    idx = np.empty(len(ev), np.int64)
    assert map_inputs(ev["x"], ev["y"], ev["p"], reader.width, reader.height, 1, 2, idx) == 0
    return ev, idx


def layer(rng, w, n_out, tau, reset, ref, shape=None, bias=0.0):
    theta = rng.uniform(0.8, 1.2, n_out)
    return {"w": w.astype(np.float32), "conv": shape, "theta": theta, "tau": tau,
            "bias": np.full(n_out, bias) * theta / tau if math.isfinite(tau) else np.zeros(n_out),
            "reset": reset, "ref": ref}


def conv_conv_dense(rng):
    """2 x 34 x 34 -> conv 5x5 /2 pad 1 -> 6 x 16 x 16 (LIF, subtract, refractory) -> conv 3x3
    pad 1 -> 8 x 16 x 16 (IF, zero) -> dense 10 (LIF, subtract)."""
    return [
        layer(rng, rng.normal(0.12, 0.25, (6, 2, 5, 5)), 6 * 16 * 16, 20_000.0, "subtract", 500,
              ConvShape((2, 34, 34), (2, 2), (1, 1))),
        layer(rng, rng.normal(0.08, 0.2, (8, 6, 3, 3)), 8 * 16 * 16, math.inf, "zero", 0,
              ConvShape((6, 16, 16), 1, 1)),
        layer(rng, rng.normal(0.02, 0.1, (8 * 16 * 16, 10)), 10, 50_000.0, "subtract", 0),
    ]


def asymmetric_with_bias(rng):
    """Stride (1, 3), padding (2, 0), biases towards rest and reset to zero: 2 x 34 x 34 ->
    conv 4x3 -> 5 x 35 x 11 -> dense 10."""
    return [
        layer(rng, rng.normal(0.15, 0.3, (5, 2, 4, 3)), 5 * 35 * 11, 5_000.0, "zero", 200,
              ConvShape((2, 34, 34), (1, 3), (2, 0)), bias=0.5),
        layer(rng, rng.normal(0.05, 0.2, (5 * 35 * 11, 10)), 10, math.inf, "zero", 0),
    ]


def dense_then_conv(rng):
    """A conv layer after a dense one, whose 2 * 8 * 8 neurons it reads as a (2, 8, 8) map:
    2312 -> dense 128 (LIF) -> conv 3x3 /2 -> 4 x 3 x 3 (LIF, subtract)."""
    return [
        layer(rng, rng.normal(0.03, 0.1, (2312, 128)), 128, 10_000.0, "subtract", 0),
        layer(rng, rng.normal(0.3, 0.4, (4, 2, 3, 3)), 4 * 3 * 3, 10_000.0, "subtract", 100,
              ConvShape((2, 8, 8), 2, 0)),
    ]


@pytest.mark.parametrize("make, sample", [(conv_conv_dense, 0), (asymmetric_with_bias, 300),
                                          (dense_then_conv, 700)])
def test_conv_networks_match_reference_on_nmnist(recordings, make, sample):
    ev, idx = nmnist_events(recordings, sample, 2500)
    layers = make(np.random.default_rng(sample))
    net = network(layers)
    t = ev["t"].astype(np.int64)
    out = lif.run(net, lif.init_state(net, int(t[0])), t, idx, capacity=64)  # forces resumption
    ref = reference(layers, net.sizes.tolist(), t, idx)
    for l in range(len(layers)):
        assert sum(1 for s in ref if s[1] == l) > 20, f"layer {l} should spike"
    got = list(zip(out["t"].tolist(), out["layer"].tolist(), out["neuron"].tolist()))
    assert got == [(te, l, j) for te, l, j, _ in ref]
    np.testing.assert_allclose(out["v"], [v for *_, v in ref], rtol=1e-5)


@pytest.mark.parametrize("stride, padding, kernel", [(1, 0, (3, 3)), (2, 1, (5, 5)),
                                                     ((2, 1), (0, 3), (4, 7))])
def test_potentials_equal_torch_conv2d_of_spike_counts(recordings, stride, padding, kernel):
    """A non-leaky layer that never fires (threshold 1e30) holds, after a sample, the conv2d of
    its per-pixel-and-polarity event counts (torch, float64), neuron for neuron."""
    torch = pytest.importorskip("torch")
    ev, idx = nmnist_events(recordings, 42)
    rng = np.random.default_rng(1)
    k = rng.normal(0, 1, (7, 2) + kernel).astype(np.float32)
    shape = ConvShape((2, 34, 34), stride, padding)
    net = lif.make_network([k], 1e30, np.inf, convs=[shape])
    state = lif.init_state(net, 0)
    assert len(lif.run(net, state, ev["t"].astype(np.int64), idx)["t"]) == 0
    counts = np.zeros((2, 34, 34))
    np.add.at(counts, (ev["p"].astype(np.int64), ev["y"], ev["x"]), 1.0)
    want = torch.nn.functional.conv2d(torch.from_numpy(counts[None]),
                                      torch.from_numpy(k.astype(np.float64)),
                                      stride=stride, padding=padding)[0].numpy()
    got = lif.potentials(net, state, 0, int(ev["t"][-1]))
    assert len(got) == want.size
    np.testing.assert_allclose(got, want.ravel()[conv.channel_last_order(want.shape)],
                               rtol=1e-12, atol=1e-9)


def test_bad_conv_shapes_are_named():
    k = np.zeros((4, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="layer 0: the kernel takes 2 input channels"):
        lif.make_network([k], 1.0, np.inf, convs=[ConvShape((3, 10, 10))])
    with pytest.raises(ValueError, match="layer 0: a 3 x 3 kernel does not fit a 2 x 2 map"):
        lif.make_network([k], 1.0, np.inf, convs=[ConvShape((2, 2, 2))])
    with pytest.raises(ValueError, match="layer 0: stride must be >= 1"):
        lif.make_network([k], 1.0, np.inf, convs=[ConvShape((2, 10, 10), 0)])
    with pytest.raises(ValueError, match=r"layer 1: takes 200 inputs, the layer before has 256"):
        lif.make_network([k, k], 1.0, np.inf, convs=[ConvShape((2, 10, 10)),
                                                      ConvShape((2, 10, 10))])
    with pytest.raises(ValueError, match=r"out_c, in_c, kh, kw"):
        lif.make_network([k[0]], 1.0, np.inf, convs=[ConvShape((2, 10, 10))])


def conv_model(layers):
    from pipeline.core.model import SnnModel

    return SnnModel(weights=tuple(l["w"] for l in layers),
                    thresholds=tuple(l["theta"] for l in layers),
                    biases=tuple(l["bias"] for l in layers), taus_us=tuple(l["tau"] for l in layers),
                    resets=tuple(l["reset"] for l in layers),
                    refractory_us=tuple(l["ref"] for l in layers), classes=tuple("0123456789"),
                    convs=tuple(l["conv"] for l in layers))


def test_conv_model_file_round_trip_through_the_snn_stage(recordings, tmp_path):
    """A conv -> conv -> dense model saved, loaded (same packed network) and run by the snn stage
    on a real sample in 1 ms packets: every layer's spikes equal ``lif.run``'s."""
    from pipeline.core.model import load_model
    from pipeline.core.packet import Packetizer, Segment, events_packet
    from pipeline.core.stage import run_chain
    from pipeline.nodes.snn import SPIKE, SnnParams, SnnStage

    model = conv_model(conv_conv_dense(np.random.default_rng(5)))
    path = tmp_path / "conv.npz"
    model.save(path)
    with np.load(path) as archive:
        assert str(archive["kind0"]) == "conv" and archive["kernel0"].shape == (6, 2, 5, 5)
        assert archive["in_shape1"].tolist() == [6, 16, 16] and "w0" not in archive
        assert archive["stride0"].tolist() == [2, 2] and archive["padding1"].tolist() == [1, 1]
        assert "kind2" not in archive and archive["w2"].shape == (2048, 10)
    loaded = load_model(path)
    for field, a, b in zip(model.net._fields, model.net, loaded.net):
        np.testing.assert_array_equal(a, b, err_msg=field)
    leaky = loaded.leaky_network(30_000.0)  # segments = "activity": the same layers, all leaky
    assert leaky.kind.tolist() == [lif.CONV, lif.CONV, lif.DENSE]
    np.testing.assert_array_equal(leaky.geometry, loaded.net.geometry)
    np.testing.assert_allclose(leaky.inv_tau, 1 / 30_000.0)
    ev, idx = nmnist_events(recordings, 9)
    packetizer = Packetizer(max_us=1000)
    chunks = packetizer.push(ev) + packetizer.flush()
    packets = [events_packet("nmnist", k, chunk, 34, 34, Segment(0, start=k == 0))
               for k, chunk in enumerate(chunks)]
    out = run_chain(packets, [SnnStage("snn", SnnParams(model=str(path), layers="all"))])
    got = np.concatenate([p.records for p in out])
    got = got[got["kind"] == SPIKE]
    want = lif.run(loaded.net, lif.init_state(loaded.net, int(ev["t"][0])),
                   ev["t"].astype(np.int64), idx)
    assert np.all(np.bincount(want["layer"]) > 100)
    for name in ("t", "layer", "neuron", "v"):
        np.testing.assert_array_equal(got[name], want[name])


def test_conv_model_file_errors_name_the_key(tmp_path):
    from pipeline.core.model import load_model

    model = conv_model(asymmetric_with_bias(np.random.default_rng(0)))
    path = tmp_path / "conv.npz"
    model.save(path)
    with np.load(path) as archive:
        keys = dict(archive)
    cases = [({"kind0": np.array("pool")}, "kind0 is 'pool', expected one of"),
             ({"stride0": None}, "lacks key 'stride0'"),
             ({"in_shape0": np.array([2, 30, 30])},
              r"in_shape0 is \(2, 30, 30\), the input mapping gives"),
             ({"kernel0": np.zeros((5, 3, 4, 3), np.float32)}, "takes 3 input channels")]
    for change, message in cases:
        broken = {k: v for k, v in {**keys, **change}.items() if v is not None}
        bad = tmp_path / "bad.npz"
        np.savez(bad, **broken)
        with pytest.raises(ValueError, match=message) as error:
            load_model(bad)
        assert str(bad) in str(error.value)
