"""`evpipe top` against the metrics stream of real running graphs, and against bad publishers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import zmq

from pipeline.cli.commands.top import COLUMNS
from pipeline.runtime.config import load
from pipeline.runtime.graph import run_threads
from tests.conftest import AEDAT4_SAMPLE, ROOT
from tests.pipeline.helpers import write_config
from tests.sinks.helpers import demo_config, failing_config

EVPIPE = [sys.executable, "-m", "pipeline.cli"]


def top(*args, timeout=120):
    return subprocess.run(EVPIPE + ["top", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def rows(table: str) -> dict[str, dict[str, str]]:
    """The rows of one printed table by node name: {heading: cell text}, cut at the column widths."""
    lines = table.strip().splitlines()
    assert lines[0].split() == ["node", "kind", "rate", "packets/s", "dropped", "missed", "malformed",
                                "drained",
                                "restarts", "p50", "us", "p99", "us", "e2e", "p50", "ms", "e2e", "p99", "ms",
                                "state"]
    found = {}
    for line in lines[2:]:
        if line.startswith("("):
            continue
        cells, at = {}, 0
        for heading, width, _ in COLUMNS:
            cells[heading] = line[at:at + abs(width)].strip()
            at += abs(width) + 1
        found[cells["node"]] = cells
    return found


def looping_graph(path, name: str, prefix: str) -> str:
    """A graph named ``name``, no metrics_address: the AEDAT4 sample looping in real time through
    a passthrough stage into a JSON-lines sink, each in a worker of its own (so the stage reads
    its input off a socket); node names start with ``prefix``."""
    return str(write_config(path, f"""
[graph]
name = "{name}"
placement = "per_node"
summary = false
metrics_interval_s = 0.3

[source.{prefix}camera]
type = "replay"
path = "{AEDAT4_SAMPLE}"
speed = 1.0
loop = true

[stage.{prefix}pass]
type = "passthrough"

[sink.{prefix}record]
type = "jsonl"
path = "{path.parent / (prefix + 'segments.jsonl')}"

[[link]]
from = "{prefix}camera"
to = "{prefix}pass"

[[link]]
from = "{prefix}pass"
to = "{prefix}record"
"""))


def test_two_running_graphs_are_told_apart_by_their_config(tmp_path):
    """Graphs named differently publish on different default addresses: `evpipe top CONFIG` finds
    each one's nodes, and only those, with no address given."""
    first = looping_graph(tmp_path / "first.toml", f"top-first-{tmp_path.name}", "a_")
    second = looping_graph(tmp_path / "second.toml", f"top-second-{tmp_path.name}", "b_")
    stop = threading.Event()
    graphs = [threading.Thread(target=run_threads, args=(load(path), stop), daemon=True)
              for path in (first, second)]
    for graph in graphs:
        graph.start()
    try:
        seen = {path: top(path, "--once", "--interval", "1.0") for path in (first, second)}
    finally:
        stop.set()
        for graph in graphs:
            graph.join(30)
    for path, prefix in ((first, "a_"), (second, "b_")):
        result = seen[path]
        assert result.returncode == 0, result.stderr
        table = rows(result.stdout)
        assert set(table) == {f"{prefix}camera", f"{prefix}pass", f"{prefix}record"}
        # the recording plays at 190k events/s in real time: every node sees events flowing
        for name, row in table.items():
            rate, unit = row["rate"].split()
            assert unit == "events/s", row
            assert 20_000 < float(rate.replace(",", "")) < 2_000_000, (name, rate)
            assert row["state"] == "running"
        # a source reads nothing; the others read at least one message per poll
        assert table[f"{prefix}camera"]["drained"] == "0"
        assert int(table[f"{prefix}pass"]["drained"]) >= 1
        assert table[f"{prefix}pass"]["p50 us"] != "-"  # latency from a stage that processed packets


def watch(config: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """`evpipe top CONFIG` started first, then `evpipe run CONFIG`; both results."""
    watcher = subprocess.Popen(EVPIPE + ["top", config, "--interval", "0.5", "--timeout", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    time.sleep(1.0)  # top is connecting; the graph binds the address when it starts
    ran = subprocess.run(EVPIPE + ["run", config], capture_output=True, text=True, timeout=300, cwd=ROOT)
    out, err = watcher.communicate(timeout=60)
    return subprocess.CompletedProcess(watcher.args, watcher.returncode, out, err), ran


def test_top_follows_the_default_graph_to_its_end_and_labels_each_rate(tmp_path):
    watched, ran = watch(demo_config(tmp_path, name=f"top-demo-{tmp_path.name}"))
    assert ran.returncode == 0, ran.stderr
    assert watched.returncode == 0, watched.stderr  # ended by itself: the graph ended cleanly
    assert "ended cleanly" in watched.stderr
    last = rows(watched.stdout.strip().split("\n\n")[-1])
    # each node's rate counts what it receives (a source: what it emits), named after the
    # packets' record dtype
    units = {name: row["rate"].split(" ", 1)[1] for name, row in last.items()}
    assert units == {"replay": "events/s", "denoise": "events/s", "hots": "events/s",
                     "snn": "features/s", "decoder": "spikes/s", "console": "JSON records/s",
                     "jsonl": "JSON records/s"}
    assert {row["state"] for row in last.values()} == {"ended"}
    # end-to-end latency from the replay's origins: none at the source, measured at every sink,
    # the same final figures as the run's end summary prints
    assert last["replay"]["e2e p50 ms"] == last["replay"]["e2e p99 ms"] == "-"
    summary = {cells[0]: cells for cells in map(str.split, ran.stdout.splitlines())
               if cells[:1] in (["console"], ["jsonl"])}
    for sink in ("console", "jsonl"):
        p50, p99 = (float(last[sink][f"e2e {p} ms"].replace(",", "")) for p in ("p50", "p99"))
        assert 0 < p50 <= p99
        assert summary[sink][-2:] == [last[sink]["e2e p50 ms"], last[sink]["e2e p99 ms"]]


def test_top_exits_nonzero_when_the_graph_fails(tmp_path):
    config = failing_config(tmp_path / "fail.toml", "processes", f"top-fail-{tmp_path.name}")
    watched, ran = watch(config)
    assert ran.returncode == 1
    assert watched.returncode == 1, watched.stderr
    assert f"graph 'top-fail-{tmp_path.name}' failed" in watched.stderr
    last = rows(watched.stdout.strip().split("\n\n")[-1])
    assert last["record"]["state"] == "ERROR" and last["replay"]["state"] == "ended"


def test_top_survives_malformed_messages_and_says_when_nothing_comes(tmp_path):
    address = f"ipc://{tmp_path}/metrics.sock"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(address)
    good = {"node": "cam", "kind": "source", "records_in_per_s": 0, "records_out_per_s": 1234.0,
            "packets_in_per_s": 0, "packets_out_per_s": 5.0, "unit_in": "", "unit_out": "events",
            "dropped": 2, "gaps": 1, "max_drained": 0, "malformed": {}, "latency_p50_us": None,
            "latency_p99_us": None, "final": False, "error": None, "restarts": 2}
    stop = threading.Event()

    def publish():
        while not stop.is_set():
            pub.send_multipart([b"metrics", b"{not json"])
            pub.send_multipart([b"metrics", json.dumps({"node": "x"}).encode()])
            pub.send_multipart([b"metrics"])
            pub.send_multipart([b"graph", b"[]"])
            pub.send_multipart([b"metrics", json.dumps(good).encode()])
            time.sleep(0.05)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        result = top(address, "--count", "2", "--interval", "0.3")
    finally:
        stop.set()
        publisher.join(5)
        pub.close(linger=0)
        ctx.term()
    assert result.returncode == 0, result.stderr
    tables = result.stdout.strip().split("\n\n")
    assert len(tables) == 2
    row = rows(tables[-1])["cam"]
    assert (row["kind"], row["rate"], row["packets/s"], row["dropped"], row["missed"],
            row["restarts"]) == ("source", "1,234 events/s", "5", "2", "1", "2")
    assert "malformed metrics message(s) ignored" in tables[-1]
    # nobody publishing: a clear message and exit code 1, not a hang
    silent = top(f"ipc://{tmp_path}/nobody.sock", "--once", "--timeout", "1")
    assert silent.returncode == 1
    assert "no metrics from" in silent.stderr and "metrics_address" in silent.stderr


def test_top_names_a_bad_config(tmp_path):
    missing = top(str(tmp_path / "nothere.toml"))
    assert missing.returncode == 2
    assert "nothere.toml: cannot read" in missing.stderr and "Traceback" not in missing.stderr


def test_top_refuses_a_tcp_port_out_of_range_instead_of_waiting_for_metrics(caplog):
    from pipeline.cli.main import main

    assert main(["top", "tcp://127.0.0.1:99999", "--once", "--timeout", "30"]) == 2
    assert "a tcp port is 1 to 65535, got 99999" in caplog.text
