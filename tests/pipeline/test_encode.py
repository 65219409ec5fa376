"""The "encode" stage on real N-MNIST samples: each input code equals kernels/encoders.py called on
the segment's event frame, alone and in a running graph feeding the snn stage and the decoder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kernels import encoders
from kernels.snn_input import map_inputs
from pipeline.core.model import SnnModel
from pipeline.core.packet import Packetizer, Segment, events_packet
from pipeline.core.stage import run_chain
from pipeline.nodes.encode import EncodeParams, EncodeStage
from pipeline.runtime.config import load
from pipeline.runtime.graph import run
from sensors.readers import read_all
from tests.pipeline.helpers import linked, snn_decoder_tables, write_config

CODES = {"rate": {"window_us": 20_000, "max_rate_hz": 500.0, "seed": 3},
         "ttfs_linear": {"window_us": 30_000},
         "ttfs_log": {"window_us": 40_000, "tau_us": 8_000.0},
         "rank_order": {"step_us": 7}}


@pytest.fixture(scope="module")
def dataset(recordings, tmp_path_factory):
    """Two samples each of classes 0, 1 and 2, as a dataset folder."""
    root = tmp_path_factory.mktemp("encode") / "nmnist"
    for folder in sorted((recordings / "nmnist" / "Train").iterdir())[:3]:
        (root / folder.name).mkdir(parents=True)
        for path in sorted(folder.glob("*.bin"))[:2]:
            shutil.copy(path, root / folder.name / path.name)
    return root


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A 2312 -> 10 IF model on raw events (seeded random weights)."""
    w = np.random.default_rng(0).normal(0.01, 0.05, (2312, 10)).astype(np.float32)
    model = SnnModel(weights=(w,), thresholds=(1.0,), biases=(0.0,), taus_us=(np.inf,),
                     resets=("subtract",), refractory_us=(0,), classes=tuple("0123456789"))
    path = tmp_path_factory.mktemp("model") / "raw.npz"
    model.save(path)
    return path


def expected_spikes(events, code, params):
    """(t us, input index) of ``kernels.encoders`` on the frame of ``events`` (counts per pixel
    and polarity, scaled by the largest), from the last event's time."""
    idx = np.empty(len(events), np.int64)
    map_inputs(events["x"], events["y"], events["p"], 34, 34, 1, 2, idx)
    counts = np.bincount(idx, minlength=2312)
    values = counts / counts.max()
    if code == "rate":
        t, i = encoders.poisson(values * params["max_rate_hz"], params["window_us"], params["seed"])
    elif code == "ttfs_linear":
        t, i = encoders.ttfs_linear(values, 1.0, params["window_us"])
    elif code == "ttfs_log":
        t, i = encoders.ttfs_log(values, 1.0, params["tau_us"], params["window_us"])
    else:
        t, i = encoders.rank_order(values, params["step_us"])
    return t + int(events["t"][-1]), i


def spike_indices(records):
    return (records["y"].astype(np.int64) * 34 + records["x"]) * 2 + records["p"]


@pytest.mark.parametrize("code", sorted(CODES))
def test_each_code_equals_the_encoders_on_the_segment_frame(dataset, model_path, code):
    path = min(dataset.glob("*/*.bin"))
    events = read_all(path)[1]
    packetizer = Packetizer(max_us=1000)
    # the segment ends on an empty packet (a filter before may leave none), whose times say 0
    chunks = packetizer.push(events) + packetizer.flush() + [events[:0]]
    packets = [events_packet("nmnist", k, chunk, 34, 34, Segment(
        0, start=k == 0, end=k == len(chunks) - 1, label="0", name=path.name))
        for k, chunk in enumerate(chunks)]
    params = EncodeParams(model=str(model_path), code=code, packet_us=5000, **CODES[code])
    out = run_chain(packets, [EncodeStage("encode", params)])
    spikes = np.concatenate([p.records for p in out])
    t, i = expected_spikes(events, code, CODES[code])
    assert len(t) > 100
    np.testing.assert_array_equal(spikes["t"], t)
    np.testing.assert_array_equal(spike_indices(spikes), i)
    markers = [p.header.segment for p in out]
    assert markers[0].start and markers[-1].end and not any(m.end for m in markers[:-1])
    assert {(m.id, m.label, m.name) for m in markers} == {(0, "0", path.name)}
    assert out[0].header.t_first == int(events["t"][-1])  # the code starts at the segment's end
    assert all(p.header.t_last - p.header.t_first < 5000 for p in out[1:])


def test_encode_in_a_graph_feeds_the_snn_and_the_decoder(dataset, model_path, tmp_path):
    """replay -> encode (rate) -> snn -> decoder -> jsonl, the encoder's spikes also recorded:
    every sample's spikes are the encoder's on its frame, and every sample gets one decision,
    taken within the code's window after the sample's last event."""
    code = CODES["rate"]
    spikes_path, decisions_path = tmp_path / "spikes.npy", tmp_path / "decisions.jsonl"
    config = write_config(tmp_path / "encode.toml", f"""
[graph]
name = "encode"
runner = "threads"
summary = false

[source.replay]
type = "replay"
path = "{dataset}"

[stage.encode]
type = "encode"
model = "{model_path}"
code = "rate"
window_us = {code["window_us"]}
max_rate_hz = {code["max_rate_hz"]}
seed = {code["seed"]}
{snn_decoder_tables(model_path, 2)}
[sink.spikes]
type = "npy"
path = "{spikes_path}"

[sink.decisions]
type = "jsonl"
path = "{decisions_path}"
""" + linked("replay -> encode", "encode -> snn", "encode -> spikes", "snn -> decoder",
             "decoder -> decisions"))
    result = run(load(config))
    assert result.ok, result.snapshots
    got = np.load(spikes_path)
    files = sorted(dataset.glob("*/*.bin"))
    decisions = [json.loads(line) for line in decisions_path.read_text().splitlines()]
    assert [d["segment"] for d in decisions] == list(range(len(files)))
    start = 0
    for k, (path, decision) in enumerate(zip(files, decisions)):
        events = read_all(path)[1]
        t, i = expected_spikes(events, "rate", {**code, "seed": code["seed"] + k})
        np.testing.assert_array_equal(got["t"][start:start + len(t)], t)
        np.testing.assert_array_equal(spike_indices(got[start:start + len(t)]), i)
        start += len(t)
        assert decision["label"] == path.parent.name.strip() and decision["class"] is not None
        assert 0 <= decision["t"] - int(events["t"][-1]) <= code["window_us"]
    assert start == len(got)


@pytest.fixture(scope="module")
def image_folder(dataset, tmp_path_factory):
    """The dataset's samples as .npy images: each sample's event counts per (y, x, polarity),
    the model's input map, in the same class subfolders."""
    root = tmp_path_factory.mktemp("images") / "frames"
    for path in sorted(dataset.glob("*/*.bin")):
        events = read_all(path)[1]
        frame = np.zeros((34, 34, 2), np.int32)
        np.add.at(frame, (events["y"], events["x"], events["p"]), 1)
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        np.save(root / path.parent.name / f"{path.stem}.npy", frame)
    return root


@pytest.mark.parametrize("code", ["rate", "rank_order"])
def test_images_equal_the_encode_stage_on_the_same_frames(dataset, image_folder, model_path,
                                                          code):
    """Each image, the event counts of a real sample, gives the spikes the encode stage gives
    for that sample's events (times from the code's start), one segment per image with its class
    folder's label, the next code gap_us after the last allowed spike time."""
    from pipeline.nodes.encode import ImagesParams, ImagesSource

    settings = {**CODES[code], "packet_us": 3000}
    source = ImagesSource("images", ImagesParams(model=str(model_path), path=str(image_folder),
                                                 code=code, gap_us=5000, **settings))
    packets = list(source.packets())
    files = sorted(dataset.glob("*/*.bin"))
    starts = [p for p in packets if p.header.segment.start]
    assert len(starts) == len(files)
    assert [p.header.segment.label for p in starts] == [f.parent.name.strip() for f in files]
    last_end = -5000  # the first code starts at 0
    for k, path in enumerate(files):
        events = read_all(path)[1]
        t, i = expected_spikes(events, code, {**settings, "seed": settings.get("seed", 0) + k})
        mine = [p for p in packets if p.header.segment.id == k]
        got = np.concatenate([p.records for p in mine])
        t0 = mine[0].header.t_first
        np.testing.assert_array_equal(got["t"] - t0, t - int(events["t"][-1]))
        np.testing.assert_array_equal(spike_indices(got), i)
        assert t0 == last_end + 5000
        last_end = t0 + (settings["step_us"] * len(i) if code == "rank_order" else
                         settings["window_us"])


def test_images_run_in_a_graph_and_bad_images_are_named(image_folder, model_path, tmp_path):
    """images -> snn -> decoder -> jsonl: one decision per image, labelled; an image that is
    not the model's input map is an error naming the file and the shape it needs."""
    decisions_path = tmp_path / "decisions.jsonl"
    config = write_config(tmp_path / "images.toml", f"""
[graph]
name = "images"
runner = "threads"
summary = false

[source.images]
type = "images"
model = "{model_path}"
path = "{image_folder}"
code = "ttfs_linear"
window_us = 30000
{snn_decoder_tables(model_path, 2)}
[sink.decisions]
type = "jsonl"
path = "{decisions_path}"
""" + linked("images -> snn", "snn -> decoder", "decoder -> decisions"))
    result = run(load(config))
    assert result.ok, result.snapshots
    decisions = [json.loads(line) for line in decisions_path.read_text().splitlines()]
    labels = [f.parent.name.strip() for f in sorted(image_folder.glob("*/*.npy"))]
    assert [d["label"] for d in decisions] == labels and len(labels) == 6
    from pipeline.nodes.encode import read_image

    bad = tmp_path / "flat.npy"
    np.save(bad, np.zeros((34, 34)))
    with pytest.raises(ValueError, match=r"flat.npy: a float64 image of shape \(34, 34\); the "
                                         r"model's input map needs numbers shaped \(34, 34, 2\)"):
        read_image(bad, (34, 34, 2))
    with pytest.raises(ValueError, match="notes.png: not a readable image"):
        (tmp_path / "notes.png").write_text("not an image")
        read_image(tmp_path / "notes.png", (34, 34, 2))


def test_a_png_image_feeds_a_one_channel_model(dataset, tmp_path):
    """A PNG (a real sample's event counts as 8-bit grey) for a model of 34 x 34 one-channel
    feature inputs: feature events with f = 0 at the pixels, the rank-order code of the grey
    levels read back by Pillow."""
    from PIL import Image

    from pipeline.nodes.encode import ImagesParams, ImagesSource

    events = read_all(min(dataset.glob("*/*.bin")))[1]
    counts = np.zeros((34, 34))
    np.add.at(counts, (events["y"], events["x"]), 1)
    grey = np.round(255 * counts / counts.max()).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "sample.png")
    w = np.random.default_rng(1).normal(0, 0.1, (34 * 34, 10)).astype(np.float32)
    model = SnnModel(weights=(w,), thresholds=(1.0,), biases=(0.0,), taus_us=(np.inf,),
                     resets=("zero",), refractory_us=(0,), classes=tuple("0123456789"),
                     input="features", channels=1)
    model.save(tmp_path / "grey.npz")
    source = ImagesSource("images", ImagesParams(model=str(tmp_path / "grey.npz"),
                                                 path=str(tmp_path / "sample.png"),
                                                 code="rank_order", step_us=3))
    got = np.concatenate([p.records for p in source.packets()])
    t, i = encoders.rank_order(grey.astype(np.float64).ravel() / grey.max(), 3)
    assert len(t) > 100 and np.all(got["f"] == 0)
    np.testing.assert_array_equal(got["t"], t)
    np.testing.assert_array_equal(got["y"].astype(np.int64) * 34 + got["x"], i)
