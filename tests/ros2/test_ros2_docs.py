"""The configs docs/ros2.md shows load as written: the ros2 sink table joins the default graph
(events from its replay, decisions from its decoder), the ros2_source table feeds an npy sink."""

from __future__ import annotations

import re

from pipeline.runtime.config import parse
from tests.conftest import ROOT

TOML_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)


def test_documented_ros2_tables_load():
    sink, source = TOML_BLOCK.findall((ROOT / "docs" / "ros2.md").read_text())
    default = (ROOT / "config.toml").read_text()
    config = parse(default + "\n" + sink, str(ROOT / "config.toml"))
    assert config.nodes["robot"].type == "ros2"
    assert {link.source for link in config.links if link.target == "robot"} == {"replay", "decoder"}
    config = parse(source + '\n[sink.out]\ntype = "npy"\npath = "out.npy"\n[[link]]\nfrom = "camera"\n'
                            'to = "out"\n', str(ROOT / "ros2.toml"))
    assert config.nodes["camera"].params.reliability == "best_effort"
