"""Every config the documentation shows loads as written: the README's graph, the sink tables of
docs/decisions.md and docs/viewer.md added to the default graph, config.toml and configs/*.toml."""

from __future__ import annotations

import re

import pytest

from pipeline.runtime.config import load, parse
from tests.conftest import ROOT

TOML_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)


def blocks(doc: str) -> list[str]:
    return TOML_BLOCK.findall((ROOT / doc).read_text())


def test_readme_graph_loads():
    (text,) = blocks("README.md")
    config = parse(text, str(ROOT / "README.toml"))  # paths resolve against the repository
    assert set(config.nodes) == {"replay", "pass", "console"}
    assert [link.name for link in config.links] == ["replay->pass", "pass->console"]


@pytest.mark.parametrize("doc", ["docs/decisions.md", "docs/viewer.md"])
def test_documented_sink_tables_join_the_default_graph(doc):
    (table,) = blocks(doc)
    name = re.search(r"^\[sink\.(\w+)\]", table, re.M).group(1)
    if "[[link]]" not in table:
        table += f'\n[[link]]\nfrom = "decoder"\nto = "{name}"\n'
    default = (ROOT / "config.toml").read_text()
    config = parse(default + "\n" + table, str(ROOT / "config.toml"))
    assert config.nodes[name].kind == "sink"
    assert any(link.source == "decoder" and link.target == name for link in config.links)


@pytest.mark.parametrize("path", ["config.toml"] + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*.toml")))
def test_shipped_configs_load(path):
    config = load(ROOT / path)
    assert config.nodes and config.links
