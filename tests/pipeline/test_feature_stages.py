"""Feature stages built from the registry, run in-process on real recordings."""

from __future__ import annotations

import numpy as np
import tonic

from kernels.filters import background_activity, last_times
from kernels.hats import HatsState
from kernels.hots import MODES as HOTS_MODES
from kernels.hots import hots_layer, hots_map, surface_dim
from kernels.timesurface import sae_new, sae_update, sample_surface
from pipeline.core.events import FEATURE_DTYPE, dtype_by_name, from_structured
from pipeline.core.packet import Segment, events_packet
from pipeline.core.stage import run_chain
from pipeline.runtime.registry import lookup


def build(kind, **params):
    node = lookup(kind)
    return node.build(kind, node.params(**params))


def nmnist_packets(recordings, n, per_sample=4):
    """n N-MNIST samples as packets, each sample one segment with its label (folder name)."""
    files = sorted((recordings / "nmnist" / "Train").glob("*/*.bin"))[::97][:n]
    packets, samples = [], []
    for sid, path in enumerate(files):
        events = from_structured(tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype))
        samples.append(events)
        chunks = np.array_split(events, per_sample)
        for i, chunk in enumerate(chunks):
            segment = Segment(sid, start=i == 0, end=i == len(chunks) - 1, label=path.parent.name.strip())
            packets.append(events_packet("replay", len(packets), chunk, 34, 34, segment=segment))
    return packets, samples, [p.parent.name.strip() for p in files]


def test_filter_chain_equals_kernels_and_keeps_segments(recordings):
    packets, samples, _ = nmnist_packets(recordings, 3)
    stages = [build("polarity_filter", polarity=1), build("roi", x=4, y=4, width=26, height=26),
              build("denoise", duration_us=3000, dv_compatible=False),
              build("refractory", period_us=500), build("hot_pixels", pixels=[17, 17])]
    out = run_chain(packets, stages)
    assert len(out) == len(packets)  # one packet per packet, even when empty
    assert [p.header.segment for p in out] == [p.header.segment for p in packets]
    events = np.concatenate([p.records for p in out])
    assert len(events) > 100 and (events["p"] == 1).all()
    assert ((events["x"] >= 4) & (events["x"] < 30) & (events["y"] >= 4) & (events["y"] < 30)).all()
    assert not ((events["x"] == 17) & (events["y"] == 17)).any()
    # the denoise stage alone equals its kernel over the concatenated stream
    alone = np.concatenate([p.records for p in run_chain(packets, [build("denoise")])])
    stream = np.concatenate(samples)
    keep = np.empty(len(stream), bool)
    background_activity(stream["t"], stream["x"], stream["y"], last_times(34, 34, True), 2000, keep)
    np.testing.assert_array_equal(alone, stream[keep])


def test_hot_pixels_learns_the_busiest_pixels(recordings):
    packets, samples, _ = nmnist_packets(recordings, 1, per_sample=10)
    stage = build("hot_pixels", learn_us=100_000, max_count=3)
    out = np.concatenate([p.records for p in run_chain(packets, [stage])])
    events = samples[0]
    learning = events["t"] < events["t"][0] + 100_000
    counts = np.zeros((34, 34), int)
    np.add.at(counts, (events["y"][learning], events["x"][learning]), 1)
    hot = counts[events["y"], events["x"]] > 3
    np.testing.assert_array_equal(out, events[learning | ~hot])
    assert hot[~learning].any()


def test_hats_stage_emits_one_labelled_histogram_per_sample(recordings):
    packets, samples, labels = nmnist_packets(recordings, 3)
    out = run_chain(packets, [build("hats", cell=10, rho=3, tau_us=20_000.0, window_us=100_000)])
    assert [p.header.segment.label for p in out] == labels
    for packet, events in zip(out, samples):
        assert packet.records.dtype == dtype_by_name(packet.header.dtype)
        state = HatsState(34, 34, 10, 3, 20_000.0, 100_000)
        state.update(events)
        np.testing.assert_array_equal(packet.records["value"], state.histogram().reshape(-1))
        assert packet.records["count"].max() > 0 and (packet.records["t"] == events["t"][-1]).all()


def test_time_surface_stage_samples_at_exact_period(recordings):
    packets, samples, _ = nmnist_packets(recordings, 1)
    out = run_chain(packets, [build("time_surface", tau_us=30_000.0, period_us=50_000, min_value=0.0)])
    events = samples[0]
    sample_times = [int(p.records["t"][0]) for p in out[:-1]]
    assert np.diff(sample_times).tolist() == [50_000] * (len(sample_times) - 1)
    for packet, t in zip(out, sample_times):
        before = events[events["t"] < t]
        sae = sae_new(34, 34)
        sae_update(sae, before["t"], before["x"], before["y"], before["p"], False)
        values = np.empty(sae.shape)
        sample_surface(sae, t, 30_000.0, values)
        r = packet.records
        np.testing.assert_allclose(r["value"], values[r["c"], r["y"], r["x"]].astype(np.float32))
        assert len(r) == values.size
    assert out[-1].header.segment.end


def kernel_features(samples, channels, params):
    """Per sample, the HOTS kernel's feature indices: a fresh memory for each sample, the
    prototypes learnt on across samples (what the stage must do with segments)."""
    mode = HOTS_MODES[params.mode]
    protos = np.zeros((surface_dim(params.in_channels, params.radius, mode), params.n_prototypes))
    hits = np.zeros(params.n_prototypes, np.int64)
    out = []
    for events, channel in zip(samples, channels):
        memory = hots_map(34, 34, params.in_channels, params.radius, mode)
        f = np.empty(len(events), np.int16)
        hots_layer(events["t"], events["x"], events["y"], channel, *memory, params.radius,
                   params.tau_us, mode, protos, hits, True, f)
        out.append(f)
    return out, protos


def test_hots_stage_emits_features_and_chains(recordings):
    packets, samples, _ = nmnist_packets(recordings, 2)
    layers = [build("hots", radius=2, n_prototypes=8, mode="same"),
              build("hots", radius=4, tau_us=50_000.0, n_prototypes=16, mode="all", in_channels=8)]
    first = run_chain(packets, layers[:1])
    assert first[0].records.dtype == FEATURE_DTYPE and first[0].header.dtype == "features"
    expected_f1, protos1 = kernel_features(samples, [s["p"] for s in samples], layers[0].params)
    for sid, f in enumerate(expected_f1):
        mine = np.concatenate([p.records for p in first if p.header.segment.id == sid])
        np.testing.assert_array_equal(mine["f"], f)
        np.testing.assert_array_equal(mine[["t", "x", "y"]].tolist(), samples[sid][["t", "x", "y"]].tolist())
    np.testing.assert_array_equal(layers[0].protos, protos1)
    assert len(np.unique(np.concatenate(expected_f1))) == 8  # every prototype wins somewhere
    second = run_chain(first, layers[1:])
    expected_f2, protos2 = kernel_features(samples, expected_f1, layers[1].params)
    np.testing.assert_array_equal(np.concatenate([p.records["f"] for p in second]), np.concatenate(expected_f2))
    np.testing.assert_array_equal(layers[1].protos, protos2)
