"""The event-frame kernel against a slow reference, and the viewer rendered headless."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from kernels import frames as kf
from pipeline.core.packet import Packetizer, Segment, events_packet, json_packet
from pipeline.nodes.sinks import ViewerParams, ViewerSink
from pipeline.ui.viewer import BACKGROUND, OFF_COLOUR, ON_COLOUR, Viewer
from sensors.readers import read_all
from sensors.replay import Replay
from sensors.synthetic import Scene, scene_events
from tests.conftest import AEDAT4_SAMPLE, ROOT
from tests.pipeline.helpers import free_port


@pytest.fixture(scope="module")
def sample():
    reader, events = read_all(AEDAT4_SAMPLE)
    return reader.width, reader.height, events


def reference_frame(events, width, height, now, tau):
    """Obviously correct: every event's own weight exp(-(now - t) / tau), summed per pixel."""
    out = np.zeros((2, height, width))
    np.add.at(out, ((events["p"] != 0).astype(int), events["y"], events["x"]),
              np.exp(-(now - events["t"].astype(np.float64)) / tau))
    return out


@pytest.mark.parametrize("tau", [500.0, 30_000.0, 1e12])
def test_decaying_frame_matches_the_reference(sample, tau):
    width, height, events = sample
    acc, t0 = kf.frame_new(width, height)
    last = np.full((height, width), -1, np.int64)
    t0[0] = events["t"][0]
    for start in range(0, len(events), 7_000):  # packet by packet, as the viewer feeds it
        chunk = events[start:start + 7_000]
        kf.accumulate(acc, t0, last, chunk["t"], chunk["x"], chunk["y"], chunk["p"], tau)
    now = int(events["t"][-1])
    got = acc * kf.decay_scale(t0, now, tau)
    want = reference_frame(events, width, height, now, tau)
    assert np.allclose(got, want, rtol=1e-9, atol=1e-300)
    if tau == 500.0:
        assert t0[0] > events["t"][0]  # renormalised on the way
    touched = np.zeros((height, width), bool)
    touched[events["y"], events["x"]] = True
    assert (last[touched] >= events["t"][0]).all() and (last[~touched] == -1).all()


def pixel_sets(events, width, height):
    on = np.zeros((height, width), bool)
    off = np.zeros((height, width), bool)
    on[events["y"][events["p"] != 0], events["x"][events["p"] != 0]] = True
    off[events["y"][events["p"] == 0], events["x"][events["p"] == 0]] = True
    return on, off


def test_viewer_shows_on_and_off_where_events_were_and_nothing_elsewhere(sample, tmp_path):
    width, height, events = sample
    out = tmp_path / "view.png"
    viewer = Viewer(save=str(out), clock="stream", tau_us=1e12)  # no visible decay
    for packet in Replay("dvx", AEDAT4_SAMPLE).packets():
        viewer.feed(packet)
        viewer.maybe_draw()
    viewer.close()
    assert viewer.events == len(events) == 111_954
    image = viewer.frame_rgb()
    on, off = pixel_sets(events, width, height)
    assert on.sum() > 1000 and off.sum() > 1000
    assert (image[on & ~off] == ON_COLOUR).all()
    assert (image[off & ~on] == OFF_COLOUR).all()
    assert (image[~on & ~off] == BACKGROUND).all()
    assert (image[on & off] != BACKGROUND).any(axis=1).all()
    # the saved figure holds that panel: ON and OFF colours, as drawn
    saved = np.asarray(Image.open(out).convert("RGB"))
    assert (saved == viewer.pixels()).all()
    for colour in (ON_COLOUR, OFF_COLOUR):
        assert (np.abs(saved.astype(int) - colour).sum(axis=2) == 0).sum() > 500
    # at most one draw per 1/30 s slot of stream time (a span touches at most ceil(30 d) + 1)
    duration_s = (events["t"][-1] - events["t"][0]) / 1e6
    assert 1 <= viewer.pacer.drawn <= math.ceil(30 * duration_s) + 1


def test_with_decay_only_recent_event_pixels_are_lit(sample):
    width, height, events = sample
    viewer = Viewer(width, height, clock="stream", tau_us=10_000)
    viewer.feed(events_packet("dvx", 0, events, width, height))
    image = viewer.frame_rgb()
    lit = (image != BACKGROUND).any(axis=2)
    on, off = pixel_sets(events, width, height)
    assert lit.sum() > 100
    assert not (lit & ~on & ~off).any()  # nothing lit where no event ever was
    recent = events[events["t"] > events["t"][-1] - 10_000]
    on_recent, off_recent = pixel_sets(recent, width, height)
    assert lit[on_recent | off_recent].mean() > 0.9  # the last tau's events all show
    assert lit.sum() < (on | off).sum() / 2  # old ones faded


def test_gif_from_a_viewer_sink_with_neurons_and_decisions(tmp_path, sample):
    width, height, events = sample
    out = tmp_path / "view.gif"
    sink = ViewerSink("viewer", ViewerParams(save=str(out), fps=20, max_frames=8))
    t0 = int(events["t"][0])
    spikes = np.zeros(4, dtype=[("t", "<i8"), ("seen", "<i8"), ("neuron", "<i4"), ("v", "<f4"),
                                ("layer", "<i2"), ("kind", "i1")])
    spikes["neuron"] = [2, 0, 1, 2]
    spikes["kind"] = [0, 1, 1, 1]  # one spike of neuron 2, then three potential samples
    spikes["v"] = [1.0, 0.2, -0.1, 0.9]
    for k, start in enumerate(range(0, len(events), 10_000)):
        sink.consume(events_packet("dvx", k, events[start:start + 10_000], width, height))
    spike_packet = events_packet("snn", 0, spikes, 0, 0, Segment(0, start=True), dtype="spikes")
    sink.consume(spike_packet)
    sink.consume(json_packet("decoder", 0, [{"class": 2, "class_name": "two", "margin": 1.0,
                                             "rule": "count", "decoder_ns": 5000, "events": 99,
                                             "segment": 0, "label": "two", "t": t0}]))
    sink.close()
    viewer = sink.viewer
    assert viewer.counts.tolist() == [0, 0, 1] and viewer.potentials.tolist() == pytest.approx([0.2, -0.1, 0.9])
    assert viewer.tick_names == ("0", "1", "two")
    assert "decision: two  (right)" in viewer.status_text()
    with Image.open(out) as gif:
        assert gif.n_frames == viewer.video.count == 8  # capped at max_frames


def test_frames_are_dropped_not_queued_at_10_mev_per_s():
    """10 Mev/s of synthetic events fed in real time: every event is accumulated, at most one
    redraw per 1/30 s slot, and every slot without a draw is counted as dropped."""
    scene = Scene(rate=10e6)
    packetizer = Packetizer(max_us=1000)
    packets = [events_packet("syn", i, cut, scene.width, scene.height)
               for i, cut in enumerate(c for chunk in scene_events(scene, 2_000_000) for c in packetizer.push(chunk))]
    total = sum(len(p) for p in packets)
    assert total >= 19_900_000
    viewer = Viewer(clock="wall", fps=30)
    start = time.monotonic()
    first_slot = None
    for packet in packets:  # released at their sensor time, as a camera would
        delay = packet.header.t_last / 1e6 - (time.monotonic() - start)
        if delay > 0:
            time.sleep(delay)
        viewer.feed(packet)
        viewer.maybe_draw()
        first_slot = viewer.pacer.slot if first_slot is None else first_slot
    elapsed = time.monotonic() - start
    pacer = viewer.pacer
    assert viewer.events == total
    slots = pacer.slot - first_slot + 1
    assert pacer.drawn + pacer.dropped == slots <= math.ceil(30 * elapsed) + 1
    assert 2 <= pacer.drawn


def test_view_command_on_a_live_link(tmp_path):
    """`evpipe view ADDRESS --save` receiving from `evpipe replay --publish` in another process."""
    address = f"tcp://127.0.0.1:{free_port()}"
    evpipe = [sys.executable, "-m", "pipeline.cli"]
    publisher = subprocess.Popen(evpipe + ["replay", str(AEDAT4_SAMPLE), "--publish", address,
                                           "--mode", "lossless"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out = tmp_path / "live.png"
    try:
        view = subprocess.run(evpipe + ["view", address, "--mode", "lossless", "--save", str(out),
                                        "--timeout", "60"],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        publisher.wait(60)
    finally:
        publisher.kill()
    assert view.returncode == 0, view.stderr
    assert view.stdout.startswith("111,954 events in 583 packets, 0 decisions, 0 packets lost")
    assert publisher.returncode == 0, publisher.stderr
    # the picture a viewer with the command's settings draws from the recording itself
    drawn = tmp_path / "drawn.png"
    viewer = Viewer(fps=30, tau_us=30_000, surface_tau_us=50_000, save=str(drawn), clock="stream",
                    title=address)
    for packet in Replay("dvx", AEDAT4_SAMPLE).packets():
        viewer.feed(packet)
        viewer.maybe_draw()
    viewer.close()
    with Image.open(out) as image, Image.open(drawn) as expected:
        saved = np.asarray(image.convert("RGB"))
        expected = np.asarray(expected.convert("RGB"))
    # title, event frame and time surface (the upper half) are equal; the status text below
    # holds wall-clock rates and frame counts
    half = saved.shape[0] // 2
    assert saved.shape == expected.shape and np.array_equal(saved[:half], expected[:half])
    for colour in (ON_COLOUR, OFF_COLOUR):
        assert (np.abs(saved.astype(int) - colour).sum(axis=2) == 0).sum() > 50


@pytest.mark.parametrize("inputs, flags, message", [
    (["tcp://nope"], [], "expected tcp://HOST:PORT, ipc://PATH or inproc://NAME, got 'tcp://nope'"),
    ([str(AEDAT4_SAMPLE)], ["--format", "bogus"], "--format: expected 'auto' or one of"),
])
def test_view_refuses_a_malformed_address_or_an_unknown_format_in_one_line(
        tmp_path, caplog, inputs, flags, message):
    from pipeline.cli.main import main

    assert main(["view", *inputs, "--save", str(tmp_path / "v.png"), *flags]) == 2
    assert message in caplog.text and not (tmp_path / "v.png").exists()


def test_view_of_an_unreadable_recording_exits_2_naming_it(tmp_path, caplog):
    from pipeline.cli.main import main

    cut = tmp_path / "cut.aedat4"
    cut.write_bytes(AEDAT4_SAMPLE.read_bytes()[:300_000])
    assert main(["view", str(cut), "--save", str(tmp_path / "v.png")]) == 2
    assert f"{cut} at byte 300000: file ends" in caplog.text and not (tmp_path / "v.png").exists()
