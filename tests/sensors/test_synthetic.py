"""Synthetic scene determinism and rate; sources' node types; the replay timestamp policy."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.runtime.registry import lookup
from sensors.readers import read_all
from sensors.replay import Replay, TimeOrder
from sensors.synthetic import Scene, scene_events, scene_slice


def test_same_parameters_same_events_and_slices_reproducible_alone():
    scene = Scene(rate=2e6, seed=7)
    first = np.concatenate(list(scene_events(scene, 50_000)))
    again = np.concatenate(list(scene_events(scene, 50_000)))
    assert (first == again).all()
    assert (scene_slice(scene, 30) == first[first["t"] >= 30_000][:len(scene_slice(scene, 30))]).all()
    other = np.concatenate(list(scene_events(Scene(rate=2e6, seed=8), 50_000)))
    assert not (other == first).all()


@pytest.mark.parametrize("rate", [1e3, 1e6, 2.5e7])
def test_rate_is_exact_and_events_valid(rate):
    scene = Scene(width=640, height=480, rate=rate, slice_us=1000)
    events = np.concatenate(list(scene_events(scene, 20_000)))
    assert len(events) == round(rate * 0.02)
    assert (np.diff(events["t"]) >= 0).all() and events["t"][-1] < 20_000
    assert events["x"].min() >= 0 and events["x"].max() < 640
    assert events["y"].min() >= 0 and events["y"].max() < 480
    if rate >= 1e6:
        assert 0.45 < events["p"].mean() < 0.55


def test_edges_leading_on_trailing_off():
    """Without noise, every event lies on a disc edge; ON events sit on the side it moves to."""
    scene = Scene(rate=1e6, shapes=1, noise=0.0, radius=15, speed=500)
    events = scene_slice(scene, 0)
    centre = np.array([events["x"].mean(), events["y"].mean()])
    later = scene_slice(scene, 20)
    motion = np.array([later["x"].mean(), later["y"].mean()]) - centre
    offsets = np.stack([events["x"] - centre[0], events["y"] - centre[1]], axis=1)
    assert np.all(np.abs(np.hypot(offsets[:, 0], offsets[:, 1]) - 15) < 2)
    ahead = offsets @ motion > 0
    assert (events["p"][ahead] == 1).mean() > 0.95 and (events["p"][~ahead] == 0).mean() > 0.95


def test_synthetic_node_type_builds_a_source():
    node = lookup("synthetic")
    source = node.build("syn", node.params(rate=1e5, duration_us=10_000, speed_factor=0))
    packets = list(source.packets())
    assert sum(len(p) for p in packets) == 1000
    assert all(p.header.width == 320 and p.header.t_last - p.header.t_first < 1000 for p in packets)
    assert {lookup(n).kind for n in ("camera", "dv_network", "synthetic")} == {"source"}


@pytest.mark.parametrize("policy,expected", [
    ("keep", [5, 3, 7, 6, 9]), ("sort", [3, 5, 6, 7, 9]), ("drop", [5, 7, 9])])
def test_time_order_policies_count_backward_events(policy, expected):
    order = TimeOrder(policy)
    t = np.array([5, 3, 7, 6, 9])
    events = np.zeros(5, dtype=[("t", "<i8")])
    events["t"] = t
    assert order.apply(events)["t"].tolist() == expected
    assert order.backwards == 2


@pytest.mark.parametrize("policy", ["keep", "sort", "drop"])
def test_replay_applies_the_policy_to_real_events_out_of_order(recordings, tmp_path, policy):
    _, events = read_all(recordings / "jaer/dvs128_short.aedat")
    events = events.copy()
    swap = np.arange(1000, len(events) - 1, 5000)
    events[swap], events[swap + 1] = events[swap + 1].copy(), events[swap].copy()
    late = int(np.count_nonzero(events["t"] < np.maximum.accumulate(events["t"])))
    assert late > 0
    np.save(tmp_path / "swapped.npy", events)
    replay = Replay("r", tmp_path / "swapped.npy", timestamps=policy, width=128, height=128)
    got = np.concatenate([p.records for p in replay.packets()])
    assert replay.order.backwards == late
    assert len(got) == len(events) - (late if policy == "drop" else 0)
    assert (np.diff(got["t"]) >= 0).all() == (policy != "keep")
