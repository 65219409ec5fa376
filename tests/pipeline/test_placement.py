"""Placement: which nodes share a worker (pipeline/runtime/placement.py), the config errors of
explicit ``worker`` keys, and real fused graphs (threads and processes) that keep every node's
metrics and the same results as one worker per node."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from pipeline.runtime.config import ConfigError, load
from pipeline.runtime.graph import run
from tests.conftest import AEDAT4_SAMPLE, ROOT
from tests.pipeline.helpers import linked, write_config
from tests.sinks.helpers import demo_config

CHAIN = """
[graph]
name = "placement-{name}"
summary = false
{graph}

[source.replay]
type = "replay"
path = "{recording}"
{replay_worker}

[stage.denoise]
type = "denoise"
{denoise_worker}

[stage.pass]
type = "passthrough"
{pass_worker}

[sink.record]
type = "npy"
path = "{out}"
{record_worker}
"""


def chain(tmp_path, graph: str = "", links: str = "", out=None, **workers) -> str:
    """replay -> denoise -> pass -> record over the AEDAT4 sample into ``out`` (default
    tmp_path/out.npy); ``workers``: NODE_worker -> the node's worker key; ``links``: [[link]] tables (default: all
    lossless, no address)."""
    keys = {key: f'worker = "{w}"' for key, w in workers.items()}
    for node in ("replay", "denoise", "pass", "record"):
        keys.setdefault(f"{node}_worker", "")
    text = CHAIN.format(name=tmp_path.name, graph=graph, recording=AEDAT4_SAMPLE,
                        out=out or tmp_path / "out.npy", **keys)
    text += links or linked("replay -> denoise", "denoise -> pass", "pass -> record")
    return str(write_config(tmp_path / "graph.toml", text))


def workers(config) -> list[tuple[str, ...]]:
    return [plan.nodes for plan in config.placement.workers]


def test_the_default_graph_is_cut_in_two_balanced_processes_on_two_cores(tmp_path):
    config = load(demo_config(tmp_path, name="two", cores=2))
    assert workers(config) == [("replay", "denoise"), ("hots", "snn", "decoder", "console", "jsonl")]
    assert ("denoise", "hots") not in config.placement.direct  # the one socket
    assert {("replay", "denoise"), ("hots", "snn"), ("decoder", "jsonl")} <= config.placement.direct


def test_one_core_or_threads_run_a_chain_in_one_worker_and_per_node_in_one_each(tmp_path):
    one = load(demo_config(tmp_path, name="one", cores=1))
    assert workers(one) == [("replay", "denoise", "hots", "snn", "decoder", "console", "jsonl")]
    threads = load(demo_config(tmp_path, name="threads", runner="threads", cores=2))
    assert len(workers(threads)) == 1
    two = demo_config(tmp_path, name="flag", cores=2)  # evpipe run --threads
    assert len(workers(load(two, "threads"))) == 1 and len(workers(load(two, "processes"))) == 2
    apart = load(demo_config(tmp_path, name="apart", placement="per_node"))
    assert [len(nodes) for nodes in workers(apart)] == [1] * 7 and not apart.placement.direct


def test_live_links_and_addressed_links_stay_sockets(tmp_path):
    links = ('\n[[link]]\nfrom = "replay"\nto = "denoise"\nmode = "live"\n'
             '\n[[link]]\nfrom = "denoise"\nto = "pass"\n'
             '\n[[link]]\nfrom = "pass"\nto = "record"\naddress = "tcp://127.0.0.1:5999"\n')
    config = load(chain(tmp_path, graph="cores = 1", links=links))
    assert workers(config) == [("replay",), ("denoise", "pass"), ("record",)]
    assert config.placement.direct == {("denoise", "pass")}


def test_worker_keys_place_nodes_and_the_rest_is_placed_automatically(tmp_path):
    config = load(chain(tmp_path, graph="cores = 2", pass_worker="back", record_worker="back"))
    assert [(plan.name, plan.nodes) for plan in config.placement.workers] == [
        ("replay+denoise", ("replay", "denoise")), ("back", ("pass", "record"))]


@pytest.mark.parametrize("case, error", [
    (dict(links='\n[[link]]\nfrom = "replay"\nto = "denoise"\nmode = "live"\n'
                + linked("denoise -> pass", "pass -> record"), replay_worker="w", denoise_worker="w"),
     r"graph.toml:\d+: link\[0\]: replay -> denoise is live or has an address, so it needs a "
     r"socket: its ends cannot share worker 'w'"),
    (dict(replay_worker="w", pass_worker="w"),
     r"graph.toml:\d+: source.replay.worker: worker 'w' runs source replay and so reads no "
     r"socket, but denoise -> pass enters it from another worker"),
    (dict(denoise_worker="w", record_worker="w"),
     r"graph.toml:\d+: stage.denoise.worker: workers linked in a cycle would block each other: "
     r"w -> pass -> w"),
    (dict(record_worker=""), r"graph.toml:\d+: sink.record.worker: expected the name of a worker, got ''"),
])
def test_a_placement_that_breaks_a_rule_is_a_config_error_naming_the_key(tmp_path, case, error):
    with pytest.raises(ConfigError, match=error):
        load(chain(tmp_path, **case))


def test_two_sources_cannot_share_a_worker(tmp_path):
    text = f"""
[source.a]
type = "replay"
path = "{AEDAT4_SAMPLE}"
worker = "w"

[source.b]
type = "replay"
path = "{AEDAT4_SAMPLE}"
worker = "w"

[sink.record]
type = "npy"
path = "{tmp_path / 'out.npy'}"
""" + linked("a -> record", "b -> record")
    with pytest.raises(ConfigError, match=r"source.b.worker: worker 'w' holds two sources, a and b"):
        load(write_config(tmp_path / "graph.toml", text))


@pytest.mark.parametrize("runner", ["threads", "processes"])
def test_a_fused_chain_keeps_every_event_and_every_nodes_metrics(tmp_path, runner):
    """The whole chain in one worker gives the same events as one worker per node, and each
    node still reports its own records, packets and latency."""
    results = {}
    for placement in ("auto", "per_node"):
        folder = tmp_path / placement
        folder.mkdir()
        config = load(chain(folder, graph=f'runner = "{runner}"\ncores = 1\nplacement = "{placement}"'))
        assert len(config.placement.workers) == (1 if placement == "auto" else 4)
        result = run(config)
        assert result.ok
        results[placement] = (np.load(folder / "out.npy"), result.snapshots)
    (fused, fused_metrics), (apart, apart_metrics) = results["auto"], results["per_node"]
    assert len(fused) > 20_000 and np.array_equal(fused, apart)  # of 111,954 events
    for node in ("replay", "denoise", "pass", "record"):
        for key in ("records_in", "records_out", "packets_out"):
            assert fused_metrics[node][key] == apart_metrics[node][key], (node, key)
    assert fused_metrics["denoise"]["records_out"] < fused_metrics["denoise"]["records_in"]
    for node in ("denoise", "pass", "record"):
        assert fused_metrics[node]["latency_p50_us"] is not None
        assert fused_metrics[node]["transit_p50_us"] is None  # a direct call crosses no link
        assert apart_metrics[node]["transit_p50_us"] is not None


def test_a_failing_node_in_a_fused_worker_fails_the_run_and_the_rest_still_ends(tmp_path):
    """The sink of a one-process chain cannot write its file at the end (its path is a folder):
    the run fails naming it, and the nodes before it in the same worker end cleanly with every
    event."""
    (tmp_path / "taken").mkdir()
    config = load(chain(tmp_path, graph='cores = 1\nrunner = "processes"', out=tmp_path / "taken"))
    result = run(config)
    assert len(config.placement.workers) == 1 and not result.ok
    assert "taken" in result.snapshots["record"]["error"]
    for node in ("replay", "denoise", "pass"):
        assert result.snapshots[node]["error"] is None, node
    assert result.snapshots["replay"]["records_out"] == 111_954  # the whole sample, still read


def test_the_run_logs_its_placement(tmp_path):
    config = demo_config(tmp_path, name=f"log-{tmp_path.name}")
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", config], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.search(r"graph 'log-\S+', \d worker processes: replay\+denoise", done.stderr)
    decisions = [json.loads(line) for line in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert len(decisions) == 20
