"""The viewer on datasets and live streams: panels start afresh per recording, decisions are drawn
over the events they were made on, the figure follows the sensor's aspect, the legend explains
ON/OFF overlap, a still draws one frame, abstentions read "no decision"."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.core.packet import Segment, events_packet, json_packet
from pipeline.core.stage import Stage, run_chain
from pipeline.nodes.features import Denoise, DenoiseParams, Hots, HotsParams
from pipeline.nodes.snn import DecoderParams, DecoderStage, SnnParams, SnnStage
from pipeline.ui.viewer import FADE, PANEL_PX, Viewer, overlap_colour
from sensors.readers import read_all
from sensors.replay import Replay, dataset_files
from tests.conftest import AEDAT4_SAMPLE, RECORDINGS, ROOT

NMNIST = ROOT / "recordings" / "nmnist"
LIVE = ROOT / "recordings" / "live" / "nmnist_stream.aedat4"
MODEL = str(ROOT / "recordings" / "model.npz")


def replay_into(viewer: Viewer, path, **options) -> int:
    """Feed a replay of ``path`` as a graph would; the number of frames drawn on the way."""
    drawn = 0
    for packet in Replay("replay", path, **options).packets():
        viewer.feed(packet)
        drawn += viewer.maybe_draw()
    return drawn


def test_each_recording_of_a_dataset_starts_the_panels_afresh(tmp_path):
    """20 N-MNIST samples, each with its clock starting near 0: each gets its own frames, and the
    last frame shows the last sample alone, not the 20 piled up."""
    viewer = Viewer(save=str(tmp_path / "nmnist.gif"), clock="stream", max_frames=1000)
    drawn = replay_into(viewer, NMNIST)
    last = dataset_files(NMNIST)[-1]
    alone = Viewer(clock="stream")
    replay_into(alone, last.path)
    assert viewer.segment.name == "00020.bin" and viewer.segment.label == last.label
    assert np.array_equal(viewer.frame_rgb(), alone.frame_rgb())
    assert np.array_equal(viewer.surface(), alone.surface())
    assert viewer.t_first == alone.t_first and viewer.t_now == alone.t_now
    # about 0.3 s each at 30 frames per second of sensor time: 9 to 11 frames per sample
    durations = [np.ptp(read_all(f.path)[1]["t"]) / 1e6 for f in dataset_files(NMNIST)]
    assert drawn == viewer.pacer.drawn >= sum(int(30 * d) for d in durations) >= 20 * 8
    viewer.close()
    with Image.open(tmp_path / "nmnist.gif") as gif:
        assert gif.n_frames == drawn + 1  # and the final frame at close


def test_a_still_is_drawn_once_at_close(tmp_path):
    out = tmp_path / "still.png"
    viewer = Viewer(save=str(out), clock="stream")
    assert replay_into(viewer, AEDAT4_SAMPLE) == 0 and viewer.figure is None
    viewer.close()
    assert viewer.pacer.drawn == 1
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), viewer.pixels())


@pytest.mark.parametrize("path, size", [
    (RECORDINGS / "prophesee" / "evt3_sample.raw", (1280, 720)),
    (AEDAT4_SAMPLE, (320, 240)),
    (NMNIST / "3", (34, 34)),
])
def test_the_event_panel_follows_the_sensor_aspect(tmp_path, path, size):
    viewer = Viewer(save=str(tmp_path / "aspect.png"), clock="stream")
    replay_into(viewer, path)
    viewer.close()
    assert (viewer.width, viewer.height) == size
    for image in (viewer.image, viewer.surface_image):
        box = image.get_window_extent()
        assert box.width / box.height == pytest.approx(size[0] / size[1], rel=0.01)
        assert min(box.width, box.height) >= PANEL_PX - 1
    if size == (1280, 720):
        assert viewer.image.get_window_extent().width > 500


def test_the_legend_names_the_colour_of_on_and_off_together():
    viewer = Viewer(save="unused.png", clock="stream", tau_us=1e12)  # no decay: every event full colour
    replay_into(viewer, AEDAT4_SAMPLE)
    viewer.draw()
    _, events = read_all(AEDAT4_SAMPLE)
    both = np.zeros((240, 320), bool), np.zeros((240, 320), bool)
    for polarity, seen in enumerate(both):
        chosen = events[(events["p"] != 0) == bool(polarity)]
        seen[chosen["y"], chosen["x"]] = True
    overlap = both[0] & both[1]
    assert overlap.sum() > 1000
    assert (viewer.frame_rgb()[overlap] == overlap_colour()).all()
    labels = [text.get_text() for text in viewer.legend.get_texts()]
    assert labels == ["ON", "OFF", "ON and OFF: colours add"]
    patch = viewer.legend.legend_handles[2]
    assert np.allclose(patch.get_facecolor()[:3], overlap_colour() / 255)


def stages(segments: str):
    """The model's stages as the configs set them (config.toml, configs/live_replay.toml)."""
    markers = segments == "markers"
    return [Denoise("denoise", DenoiseParams(duration_us=20_000, per_segment=markers)),
            Hots("hots", HotsParams(radius=2, tau_us=50_000.0, n_prototypes=64, mode="all",
                                    in_channels=2, learn=False, prototypes=MODEL)),
            SnnStage("snn", SnnParams(model=MODEL, segments=segments)),
            DecoderStage("decoder", DecoderParams(model=MODEL, rule="count", k=64))]


class Tap(Stage):
    """Feeds every packet to the viewer, notes each frame drawn and passes the packet on."""

    def __init__(self, viewer: Viewer, frames: list):
        super().__init__("tap")
        self.viewer, self.frames = viewer, frames

    def process(self, packet):
        viewer = self.viewer
        viewer.feed(packet)
        if viewer.maybe_draw():
            self.frames.append({"decision": viewer.decision if viewer.overlay.get_visible() else None,
                                "current": viewer.decision, "text": viewer.overlay.get_text(),
                                "segment": viewer.segment, "t_now": viewer.t_now})
        return [packet]


def run_graph(viewer: Viewer, packets, chain) -> list[dict]:
    """The replay's packets through ``chain`` in-process, the viewer fed the events, the snn's
    spikes and the decisions as they come (the order of a graph that keeps up). Returns one
    entry per frame drawn: the decision on screen (or None), the current one, the overlay's
    text, the shown segment and the newest event time."""
    frames: list[dict] = []
    denoise, hots, snn, decoder = chain
    run_chain(packets, [Tap(viewer, frames), denoise, hots, snn, Tap(viewer, frames), decoder,
                        Tap(viewer, frames)])
    return frames


def test_dataset_decisions_are_drawn_over_their_own_recording(tmp_path):
    folder = tmp_path / "four"
    chosen = dataset_files(NMNIST)[::5]  # one sample each of classes 0, 2, 5, 7
    for item in chosen:
        (folder / item.label).mkdir(parents=True)
        shutil.copy(item.path, folder / item.label)
    viewer = Viewer(save=str(tmp_path / "four.gif"), clock="stream")
    frames = run_graph(viewer, Replay("replay", folder).packets(), stages("markers"))
    assert viewer.decisions == 4
    shown = [f for f in frames if f["decision"] is not None]
    assert {f["decision"]["segment_name"] for f in shown} == {os.path.basename(i.path) for i in chosen}
    for frame in shown:
        decision = frame["decision"]
        assert frame["text"] == f"{decision['class_name']}  (true {decision['label']})"
    # on screen exactly when the decision is about the recording shown: never over the next one
    for frame in frames:
        current = frame["current"]
        about_it = current is not None and current["segment_name"] == frame["segment"].name
        assert (frame["decision"] is not None) == about_it
    assert any(f["current"] is not None and f["decision"] is None for f in frames)
    # a decision about a recording no longer shown stays off the panel (status text only)
    late = dict(shown[0]["decision"], segment_name="00002.bin")
    viewer.feed(json_packet("decoder", 99, [late]))
    assert viewer.segment.name != "00002.bin" and not viewer.on_screen()
    assert viewer.status_text().splitlines()[2].startswith("decision: ")


def test_live_decisions_stay_over_their_object_and_leave_with_it():
    """The continuous recording (no markers, objects found by the live read-out): a decision
    is on screen only while its object's events are, never in the silences between objects."""
    truth = json.loads(LIVE.with_suffix(".json").read_text())["objects"][:8]
    stop = truth[-1]["end_us"]
    viewer = Viewer(clock="stream", save="unused.gif", max_frames=1)
    packets = Replay("replay", LIVE, stop_us=stop).packets()
    frames = run_graph(viewer, packets, stages("activity"))
    shown = [f for f in frames if f["decision"] is not None]
    assert len(shown) > 20 and viewer.decisions >= 6
    fade = FADE * viewer.tau_us
    for frame in shown:
        t_now, decision = frame["t_now"], frame["decision"]
        assert decision["t"] <= t_now
        object_now = [o for o in truth if o["onset_us"] <= t_now <= o["end_us"] + fade]
        assert object_now, f"a decision on screen at {t_now} us, between objects"
        assert object_now[-1]["onset_us"] <= decision["t"] + fade
    # the previous object's decision is off the panel when the next object comes (the silence
    # between them is longer than the fade), until the read-out decides about the new one
    assert any(f["current"] is not None and f["decision"] is None for f in frames)


def test_an_abstention_reads_no_decision():
    viewer = Viewer(34, 34, clock="stream", save="unused.gif")
    events = read_all(dataset_files(NMNIST)[0].path)[1]
    viewer.feed(events_packet("replay", 0, events, 34, 34, Segment(0, start=True, name="a.bin")))
    viewer.feed(json_packet("decoder", 0, [{"class": None, "class_name": None, "rule": "abstain",
                                            "segment": 0, "segment_name": "a.bin", "label": None,
                                            "t": int(events["t"][-1]), "margin": 0.0,
                                            "reason": "no clear lead"}]))
    assert viewer.on_screen() and viewer.maybe_draw()
    assert viewer.overlay.get_text() == "no decision"
    status = viewer.status_text().splitlines()
    assert status[2:4] == ["decision: no decision", "  rule abstain, margin 0; no clear lead"]
    assert viewer.class_names == {}
