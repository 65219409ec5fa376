"""The "snn" and "decoder" stages and the model file, on real N-MNIST samples."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import lif
from kernels.snn_input import map_inputs
from pipeline.core.model import SnnModel, load_model
from pipeline.core.packet import Packetizer, Segment, events_packet
from pipeline.core.stage import run_chain
from pipeline.learn.features import FeatureSpec
from pipeline.nodes.snn import (
    SAMPLE,
    SPIKE,
    DecoderParams,
    DecoderStage,
    SnnParams,
    SnnStage,
)
from pipeline.runtime.registry import lookup
from sensors.continuous import concatenate, interleave
from sensors.readers import read_all
from sensors.replay import dataset_files
from tests.conftest import ROOT

TRAIN_PER_CLASS = 30


def class_files(recordings):
    """(label, sorted files) per class folder; folder names end in a carriage return."""
    folders = sorted((recordings / "nmnist" / "Train").iterdir())
    return [(folder.name.strip(), sorted(folder.glob("*.bin"))) for folder in folders]


def pixel_indices(events):
    idx = np.empty(len(events), np.int64)
    map_inputs(events["x"], events["y"], events["p"], 34, 34, 1, 2, idx)
    return idx


@pytest.fixture(scope="module")
def model_path(recordings, tmp_path_factory):
    """A 2312 -> 10 IF model whose weights are class templates (mean event-count images of
    TRAIN_PER_CLASS samples per class, centred): a crude but real classifier."""
    classes, templates = [], []
    for label, files in class_files(recordings):
        counts = np.zeros(2312)
        for f in files[:TRAIN_PER_CLASS]:
            idx = pixel_indices(read_all(f)[1])
            counts += np.bincount(idx, minlength=2312) / len(idx)
        classes.append(label)
        templates.append(counts / TRAIN_PER_CLASS)
    w = (np.array(templates) - np.mean(templates, axis=0)).T
    model = SnnModel(weights=((w / np.abs(w).max()).astype(np.float32),), thresholds=(1.0,),
                     biases=(0.0,), taus_us=(np.inf,), resets=("subtract",),
                     refractory_us=(0,), classes=tuple(classes))
    path = tmp_path_factory.mktemp("model") / "templates.npz"
    model.save(path)
    return path


def sample_packets(files_and_labels, gap_us=0, markers=True):
    """Replay samples back to back as 1 ms packets, one segment per sample (start/end marked)."""
    packets, offset = [], 0
    for seg_id, (label, path) in enumerate(files_and_labels):
        events = read_all(path)[1].copy()
        events["t"] += offset
        offset = int(events["t"][-1]) + 1 + gap_us
        packetizer = Packetizer(max_us=1000)
        chunks = packetizer.push(events) + packetizer.flush()
        for k, chunk in enumerate(chunks):
            segment = Segment(seg_id, start=k == 0, end=k == len(chunks) - 1, label=label,
                              name=path.name) if markers else None
            packets.append(events_packet("nmnist", len(packets), chunk, 34, 34, segment))
    return packets


def held_out(recordings, per_class):
    return [(label, f) for label, files in class_files(recordings)
            for f in files[TRAIN_PER_CLASS:TRAIN_PER_CLASS + per_class]]


def test_model_round_trip_and_errors(model_path, tmp_path):
    model = load_model(model_path)
    assert model.classes == tuple(str(d) for d in range(10))
    assert model.net.sizes.tolist() == [2312, 10]
    assert np.isinf(model.taus_us[0]) and model.resets == ("subtract",)
    archive = dict(np.load(model_path))
    del archive["reset"]
    broken = tmp_path / "broken.npz"
    np.savez(broken, **archive)
    with pytest.raises(ValueError, match="lacks key 'reset'"):
        load_model(broken)
    archive = dict(np.load(model_path))
    archive["cell"] = np.array(2)
    np.savez(broken, **archive)
    with pytest.raises(ValueError, match="w0 has 2312 rows, the input mapping needs 578"):
        load_model(broken)
    whole = model_path.read_bytes()
    for cut in (0, len(whole) // 2):  # an empty file (EOFError), a truncated one (BadZipFile)
        broken.write_bytes(whole[:cut])
        with pytest.raises(ValueError, match=f"{broken}: not a readable .npz model"):
            load_model(broken)


def test_snn_stage_equals_kernel_with_resets_at_segment_starts(recordings, model_path):
    samples = held_out(recordings, 1)[:3]
    stage = lookup("snn").build("snn", SnnParams(model=str(model_path), layers="all"))
    out = run_chain(sample_packets(samples), [stage])
    net = load_model(model_path).net
    for seg_id, (_, path) in enumerate(samples):
        events = read_all(path)[1]
        state = lif.init_state(net, int(events["t"][0]))
        want = lif.run(net, state, events["t"], pixel_indices(events))
        mine = [p for p in out if p.header.segment.id == seg_id]
        got = np.concatenate([p.records for p in mine])
        spikes = got[got["kind"] == SPIKE]
        offset = mine[0].header.t_first - int(events["t"][0])
        np.testing.assert_array_equal(spikes["t"] - offset, want["t"])
        np.testing.assert_array_equal(spikes["neuron"], want["neuron"])
        np.testing.assert_array_equal(spikes["seen"], want["src"] + 1)
        last = mine[-1].records[mine[-1].records["kind"] == SAMPLE]
        assert last["seen"].tolist() == [len(events)] * 10
        np.testing.assert_allclose(last["v"], lif.potentials(net, state, 0, int(events["t"][-1])),
                                   rtol=1e-6)


def test_snn_and_decoder_classify_held_out_samples(recordings, model_path):
    samples = held_out(recordings, 4)
    snn = SnnStage("snn", SnnParams(model=str(model_path)))
    decoder = DecoderStage("decoder", DecoderParams(model=str(model_path), rule="count", k=5,
                                                    final="always"))
    packets = sample_packets(samples)
    starts = {p.header.segment.id: p.header.t_first for p in packets if p.header.segment.start}
    spiking = run_chain(packets, [snn])
    records = [r for p in run_chain(spiking, [decoder]) for r in p.records]
    early = [r for r in records if r["rule"] == "count"]
    final = [r for r in records if r["rule"] in ("end", "forced")]
    assert [r["segment"] for r in final] == list(range(len(samples)))
    # the count rule by hand: the first output spike after which one class leads every other
    # by k = 5 spikes decides; at the segment end the most spikes (ties: higher potential) win
    expected_early, expected_final = [], []
    for seg_id in range(len(samples)):
        mine = np.concatenate([p.records for p in spiking if p.header.segment.id == seg_id])
        spikes = mine[mine["kind"] == SPIKE]
        counts = np.zeros(10, int)
        for t, neuron, seen in spikes[["t", "neuron", "seen"]].tolist():
            counts[neuron] += 1
            ranked = np.sort(counts)
            if ranked[-1] - ranked[-2] >= 5:
                expected_early.append((seg_id, int(np.argmax(counts)), t, seen, float(ranked[-1] - ranked[-2])))
                break
        last = mine[mine["kind"] == SAMPLE][-10:]
        potentials = last["v"][np.argsort(last["neuron"])]
        counts = np.bincount(spikes["neuron"], minlength=10)
        tied = np.flatnonzero(counts == counts.max())
        expected_final.append((seg_id, int(tied[np.argmax(potentials[tied])]), int(last["seen"][0])))
    assert [(r["segment"], r["class"], r["t"], r["events"], r["margin"]) for r in early] == expected_early
    assert [(r["segment"], r["class"], r["events"]) for r in final] == expected_final
    assert len(early) >= len(samples) // 2
    for r in records:
        label = samples[r["segment"]][0]
        assert r["label"] == label and r["class_name"] == str(r["class"])
        assert starts[r["segment"]] == r["t_start"] and r["stream"] == "nmnist"
    accuracy = np.mean([r["class_name"] == r["label"] for r in final])
    assert accuracy >= 0.25, accuracy  # chance is 0.10; the template model gets ~0.4


def test_margin_rule_and_forced_decision(recordings, model_path):
    samples = held_out(recordings, 1)[:2]
    snn = SnnStage("snn", SnnParams(model=str(model_path)))
    strict = DecoderStage("d", DecoderParams(model=str(model_path), rule="margin", margin=1e9))
    records = [r for p in run_chain(sample_packets(samples), [snn, strict]) for r in p.records]
    assert [r["rule"] for r in records] == ["forced", "forced"]
    snn = SnnStage("snn", SnnParams(model=str(model_path)))
    loose = DecoderStage("d", DecoderParams(model=str(model_path), rule="margin", margin=0.05))
    records = [r for p in run_chain(sample_packets(samples), [snn, loose]) for r in p.records]
    assert [r["rule"] for r in records] == ["margin", "margin"]
    assert all(r["margin"] >= 0.05 for r in records)


def test_live_readout_decides_each_sample_once():
    """Bundled samples back to back with 300 ms of silence and no markers, through the default
    feature stages and the shipped model: the leaky network and the live read-out find each
    sample, decide it once inside its own time span, with the class the marker mode gives."""
    shipped = ROOT / "recordings" / "model.npz"
    files = interleave(dataset_files(ROOT / "recordings" / "nmnist"), seed=0)[:4]
    events, shown, width, height = concatenate(files, gap_us=300_000)
    cutter = Packetizer(max_us=1000)
    packets = [events_packet("stream", i, chunk, width, height)
               for i, chunk in enumerate(cutter.push(events) + cutter.flush())]
    live = run_chain(packets, FeatureSpec().stages(prototypes=str(shipped)) + [
        SnnStage("snn", SnnParams(model=str(shipped), segments="activity")),
        DecoderStage("d", DecoderParams(model=str(shipped)))])
    records = [r for p in live for r in p.records]
    assert [r["segment"] for r in records] == list(range(len(shown)))
    assert [r["rule"] for r in records] == ["count"] * len(shown)
    for record, presented in zip(records, shown):
        assert presented.onset_us <= record["t_start"] <= record["t"] <= presented.end_us
        assert 0 < record["events"] < presented.events
    assert [r["class_name"] for r in records] == [s.label for s in shown]
