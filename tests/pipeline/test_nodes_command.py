"""`evpipe nodes`: every node type with its kind and summary; `evpipe nodes TYPE`: its parameters."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from pipeline.cli.main import main
from pipeline.core.nodetype import KINDS
from pipeline.runtime.registry import all_types
from tests.conftest import ROOT

EVPIPE = [sys.executable, "-m", "pipeline.cli"]


def evpipe(*args):
    return subprocess.run(EVPIPE + list(args), capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_listing_names_every_type_with_its_kind_and_summary():
    done = evpipe("nodes")
    assert done.returncode == 0, done.stderr
    rows = [line.split(None, 2) for line in done.stdout.splitlines()]
    types = all_types()
    assert sorted(name for _, name, _ in rows) == sorted(types)
    for kind, name, summary in rows:
        assert kind == types[name].kind
        assert summary == types[name].doc and summary.endswith(".") and "\n" not in summary
    kinds = [kind for kind, _, _ in rows]
    assert kinds == sorted(kinds, key=KINDS.index)  # sources, then stages, then sinks
    assert {"replay", "hots", "decoder", "viewer"} <= {name for _, name, _ in rows}


def test_hots_page_lists_types_literal_values_defaults_units_and_meanings():
    done = evpipe("nodes", "hots")
    assert done.returncode == 0, done.stderr
    page = done.stdout
    assert page.startswith("hots (stage)\n  One HOTS layer: events (or features) in")
    assert "\nTakes: events, features\nEmits: features\n" in page
    assert "  radius: int >= 0; px; default 2\n      R: surfaces span (2 R + 1) x (2 R + 1) pixels\n" in page
    assert "  tau_us: float > 0; us; default 20000.0\n      decay time constant of the surfaces\n" in page
    assert "  mode: one of 'same', 'all', 'merge'; default 'same'\n" in page
    assert "  prototypes: str | None; file path, relative to the config file; default None\n" in page


def test_deprecated_names_required_parameters_and_no_parameters_are_shown():
    synthetic = evpipe("nodes", "synthetic").stdout
    assert "  speed_px_s: float >= 0; px/s; default 200.0\n      speed of the discs (deprecated name: speed)" in synthetic
    assert "Emits: events" in synthetic and "Takes:" not in synthetic
    replay = evpipe("nodes", "replay").stdout
    assert "  path: str; file path, relative to the config file; required\n" in replay
    assert "  speed: float >= 0 and <= 100; default 0.0\n      replay factor" in replay
    passthrough = evpipe("nodes", "passthrough").stdout
    assert "Takes: anything\nEmits: the same as its inputs\n\nParameters: none" in passthrough


def test_unknown_type_exits_2_with_the_known_names():
    done = evpipe("nodes", "hotz")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("evpipe nodes: unknown node type 'hotz'; known: ")
    assert done.stderr.strip().split("known: ")[1].split(", ") == sorted(all_types())


@pytest.mark.parametrize("name", sorted(all_types()))
def test_every_type_page_covers_every_parameter(name, capsys):
    assert main(["nodes", name]) == 0
    page = capsys.readouterr().out
    params = all_types()[name].params
    described = re.findall(r"(?m)^  (\w+): ", page)
    assert described == [f.name for f in dataclasses.fields(params)]
    for f in dataclasses.fields(params):
        entry = re.split(r"\n  (?=\S)", page.split(f"\n  {f.name}: ", 1)[1], maxsplit=1)[0]
        words = " ".join(entry.split())
        assert " ".join(f.metadata["help"].split()) in words, (name, f.name)
