"""The scale stage: real recordings mapped onto the model's 34 x 34 input, a 640 x 480 stream
through the whole model graph, and sizes that cannot fit stopped when the config loads."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import tonic

from kernels.geometry import counters, scale
from pipeline.core.nodetype import ParamError
from pipeline.nodes.geometry import Scale, ScaleParams
from pipeline.runtime.config import ConfigError, parse
from sensors.readers import read_all
from sensors.replay import Replay, dataset_files
from tests.conftest import AEDAT4_SAMPLE, ROOT
from tests.pipeline.helpers import linked
from tests.pipeline.test_node_params import DEMO, EVPIPE

MODEL_STAGES = DEMO[DEMO.index("[stage.hots]"):DEMO.index("[sink.jsonl]")]  # hots, snn, decoder


def scaled(stage: Scale, packets) -> list:
    return [out for packet in packets for out in stage.process(packet)]


def test_the_dvxplorer_recording_centre_cropped_is_tonics_center_crop_and_downsample():
    stage = Scale("scale", ScaleParams(x0=40, width=240, threshold=1))
    packets = list(Replay("dvx", AEDAT4_SAMPLE).packets())
    out = scaled(stage, packets)
    assert len(out) == len(packets)  # one packet out per packet in: segment markers pass
    assert all((p.header.width, p.header.height) == (34, 34) for p in out)
    assert out[0].header.segment.start and out[-1].header.segment.end
    _, events = read_all(AEDAT4_SAMPLE)
    crop = tonic.transforms.CenterCrop(sensor_size=(320, 240, 2), size=240)
    theirs = tonic.transforms.Downsample(sensor_size=(240, 240, 2), target_size=(34, 34))(crop(events))
    ours = np.concatenate([p.records for p in out])
    assert np.array_equal(ours[["t", "x", "y", "p"]], theirs[["t", "x", "y", "p"]])
    assert (packets[0].records["x"] >= 40).any()  # the input was left untouched
    assert np.array_equal(packets[0].records, events[:len(packets[0].records)])


def test_counters_restart_with_each_recording_of_a_dataset():
    """N-MNIST samples (34 x 34) scaled to 17 x 17 at 4 events per output event: each sample's
    output is the kernel's on that sample alone, from fresh counters."""
    folder = ROOT / "recordings" / "nmnist"
    stage = Scale("scale", ScaleParams(out_width=17, out_height=17))
    assert ScaleParams(out_width=17, out_height=17).threshold == 0  # 0: 34 * 34 / 17 / 17 = 4
    out = scaled(stage, Replay("nmnist", folder).packets())
    by_segment: dict[int, list] = {}
    for packet in out:
        by_segment.setdefault(packet.header.segment.id, []).append(packet.records)
    files = dataset_files(folder)
    assert len(by_segment) == len(files) == 20
    for segment, item in enumerate(files):
        _, events = read_all(item.path)
        keep = np.empty(len(events), bool)
        x, y = np.empty(len(events), np.int16), np.empty(len(events), np.int16)
        n = scale(events["x"], events["y"], events["p"], 0, 0, 34, 34, 4, counters(17, 17), x, y, keep)
        got = np.concatenate(by_segment[segment])
        assert len(got) == n > len(events) // 5
        assert np.array_equal(got["x"], x[keep]) and np.array_equal(got["t"], events["t"][keep])


GRAPH = f"""\
[graph]
runner = "processes"
summary = false

[source.camera]
type = "synthetic"
width = 640
height = 480
rate = 400000.0
shapes = 2
radius = 60.0
duration_us = 300000
speed_factor = 0.0

[stage.scale]
type = "scale"
x0 = 80
width = 480
threshold = 1

{MODEL_STAGES}
[sink.decisions]
type = "jsonl"
path = "DECISIONS"

[sink.scaled]
type = "npy"
path = "SCALED"
""" + linked("camera -> scale", "scale -> hots", "hots -> snn", "snn -> decoder",
             "decoder -> decisions", "scale -> scaled")


def test_a_640_by_480_stream_scaled_into_the_34_by_34_model_runs_to_a_decision(tmp_path):
    decisions, scaled_events = tmp_path / "decisions.jsonl", tmp_path / "scaled.npy"
    config = tmp_path / "camera.toml"
    config.write_text(GRAPH.replace("DECISIONS", str(decisions)).replace("SCALED", str(scaled_events)))
    done = subprocess.run(EVPIPE + ["run", str(config)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    events = np.load(scaled_events)
    assert len(events) > 50_000  # threshold 1: every event of the 480 x 480 square, moved
    assert events["x"].max() <= 33 and events["y"].max() <= 33 and events["x"].min() >= 0
    records = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert records and all("class" in record for record in records)  # the decoder read the snn


def test_the_same_stream_without_the_scale_stage_is_refused_when_the_config_loads(tmp_path):
    text = (GRAPH.replace('from = "camera"\nto = "scale"', 'from = "camera"\nto = "hots"')
            .replace('from = "scale"\nto = "scaled"', 'from = "camera"\nto = "scaled"'))
    text = text.replace('[[link]]\nfrom = "scale"\nto = "hots"\n\n', "")
    text = text[:text.index("[stage.scale]")] + text[text.index("[stage.hots]"):]
    config = tmp_path / "unscaled.toml"
    config.write_text(text.replace("DECISIONS", str(tmp_path / "d.jsonl")).replace("SCALED", str(tmp_path / "s.npy")))
    done = subprocess.run(EVPIPE + ["run", str(config)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    link_line = [n for n, line in enumerate(text.splitlines(), 1) if line == 'to = "snn"'][0] - 2
    assert len(lines) == 1 and lines[0].endswith(
        f"{config}:{link_line}: link[1]: from hots to snn: snn (snn) takes 34 x 34 px packets; "
        "hots sends 640 x 480 px (the size of camera): map the sensor onto 34 x 34 px with a "
        "scale stage (docs/live.md)"), lines[0]
    assert not (tmp_path / "d.jsonl").exists()


@pytest.mark.parametrize("old, new, at, message", [
    ("width = 480", "width = 600", "width = 600", "stage.scale.width: the region ends at x0 + width "
                                                  "= 680 px, beyond the 640 x 480 px sensor"),
    ("x0 = 80", "x0 = 640", "x0 = 640", "stage.scale.x0: the sensor is 640 x 480 px: x0 must be "
                                        "below 640, got 640"),
    ("width = 480", "width = 480\nout_width = 481", "out_width = 481",
     "stage.scale.out_width: down-scaling only: must be at most width (480 px), got 481"),
    ("width = 480", "y0 = 460", "[stage.scale]", "stage.scale.out_height: down-scaling only: the "
                                                 "region is 20 px along height, got out_height = 34"),
    ("threshold = 1", "threshold = 1\nout_width = 17", "from = \"hots\"",
     "link[2]: from hots to snn: snn (snn) takes 34 x 34 px packets; hots sends 17 x 34 px (the "
     "size of scale)"),
], ids=["beyond-the-sensor", "x0-outside", "upscaling", "region-smaller-than-output", "wrong-output"])
def test_regions_and_sizes_that_cannot_fit_name_their_key_and_line(old, new, at, message):
    text = GRAPH.replace(old, new)
    with pytest.raises(ConfigError) as info:
        parse(text, "camera.toml")
    lines = [n for n, line in enumerate(text.splitlines(), 1) if line == at]
    if at.startswith("from"):  # a link's error points at its [[link]] line
        lines = [n - 1 for n in lines]
    assert str(info.value) == f"camera.toml:{lines[0]}: {message}" + (
        ": map the sensor onto 34 x 34 px with a scale stage (docs/live.md)" if at.startswith("from") else "")


def test_an_unknown_sensor_size_is_checked_when_the_packets_come():
    """A camera's size is known only at run time: the stage then names itself and the stream."""
    params = ScaleParams(x0=400, width=300)
    assert params.output_size(None) == (34, 34)
    stage = Scale("scale", params)
    packets = Replay("dvx", AEDAT4_SAMPLE).packets()
    with pytest.raises(ValueError, match=r"^scale: x0: the sensor is 320 x 240 px: x0 must be "
                                         r"below 320, got 400 \(packets of 'dvx'\)$"):
        stage.process(next(packets))
    with pytest.raises(ParamError, match="^out_height: down-scaling only"):
        ScaleParams(height=20)
