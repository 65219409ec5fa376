"""The live configs of configs/: every one loads, the camera and network graphs are the replay
graph with another source, and the sizes reaching the snn stage are checked."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.runtime.config import load
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.toml"))
SOURCES = {"camera.toml": ("camera", "camera"), "dv_network.toml": ("camera", "dv_network"),
           "live_replay.toml": ("replay", "replay")}


def test_the_three_live_configs_are_there():
    assert [path.name for path in CONFIGS] == sorted(SOURCES)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_every_config_loads(path):
    config = load(path)
    name, source_type = SOURCES[path.name]
    assert config.nodes[name].type == source_type
    assert config.graph.name == path.stem and config.graph.runner == "processes"
    snn = config.nodes["snn"].params
    assert snn.segments == "activity" and snn.input_size() == (34, 34)
    scale = config.nodes["scale"].params
    assert (scale.out_width, scale.out_height) == snn.input_size()
    assert [link.target for link in config.outputs("decoder")] == ["console", "decisions", "viewer"]
    assert config.nodes["decisions"].params.address == "tcp://127.0.0.1:5560"
    for link in config.links:  # events travel on live links; decisions to console and robot lossless
        assert link.mode == ("lossless" if link.target in ("console", "decisions") else "live")


def test_camera_and_network_graphs_are_the_replay_graph_with_another_source():
    replay = load(ROOT / "configs" / "live_replay.toml")

    def graph(config, source):
        nodes = {name: (node.type, dataclasses.asdict(node.params)) for name, node in config.nodes.items()
                 if name != source}
        links = [(link.source.replace(source, "SOURCE"), link.target, link.mode) for link in config.links]
        return nodes, links

    for name in ("camera.toml", "dv_network.toml"):
        assert graph(load(ROOT / "configs" / name), "camera") == graph(replay, "replay")
