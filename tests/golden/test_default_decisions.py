"""The default graph's decisions, pinned: config.toml run as `make demo` runs it (its stages
chained by direct calls in two worker processes joined by a ZeroMQ ipc link) and with one process
per node (every link a socket) must take exactly the decisions of default_decisions.json.

Per decision the file keeps what the graph decides (segment, its file name and true label, the
class chosen, the rule that chose it, the events seen by then), never host timings. The run is
deterministic: the replay is unpaced and every stage is a pure function of its input stream.
To pin a deliberate change, run this module as a script (``.venv/bin/python -m
tests.golden.test_default_decisions``); it rewrites the file from a fresh run.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import ROOT
from tests.sinks.helpers import demo_config

GOLDEN = pathlib.Path(__file__).with_name("default_decisions.json")
KEPT = ("segment", "segment_name", "label", "class_name", "rule", "events")


def run_default_graph(folder: pathlib.Path, placement: str = "auto") -> list[dict]:
    """The decisions of config.toml (a copy in ``folder`` writing its JSON lines there, its
    nodes placed by ``placement``), each reduced to the KEPT fields."""
    config = demo_config(folder, name=f"golden-{folder.name}", placement=placement)
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", config], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (folder / "demo.jsonl").read_text().splitlines()]
    return [{key: record[key] for key in KEPT} for record in records]


@pytest.mark.parametrize("placement", ["auto", "per_node"])
def test_default_graph_takes_the_pinned_decisions(tmp_path, placement):
    golden = json.loads(GOLDEN.read_text())
    assert len(golden) == 20  # one decision per bundled sample
    assert run_default_graph(tmp_path, placement) == golden


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        decisions = run_default_graph(pathlib.Path(tmp))
    GOLDEN.write_text("[\n" + ",\n".join(json.dumps(d) for d in decisions) + "\n]\n")
    print(f"{len(decisions)} decisions -> {GOLDEN}")
