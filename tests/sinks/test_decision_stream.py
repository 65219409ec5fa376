"""The decision stream end to end: real N-MNIST replay -> snn -> decoder -> decisions PUB, JSON
lines and console; read by examples/decision_consumer.py in a separate process, which may join
late; subscribers that come and go; a sink secured with CURVE, serving only the consumers it
lists."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time

import pytest
import zmq

from pipeline.core.events import empty_events
from pipeline.core.nodetype import ParamError
from pipeline.core.packet import events_packet, json_packet
from pipeline.core.stage import run_chain
from pipeline.nodes.sinks import DecisionsParams, DecisionsSink
from pipeline.nodes.snn import DecoderParams, DecoderStage, SnnParams, SnnStage
from pipeline.runtime.config import load
from pipeline.runtime.graph import run
from pipeline.security import secure_receiver, write_keys
from sensors.replay import Replay, dataset_files
from tests.conftest import ROOT
from tests.pipeline.helpers import free_port, linked, snn_decoder_tables, write_config
from tests.sinks.helpers import nmnist_subset, random_model

CONSUMER = ROOT / "examples" / "decision_consumer.py"
# docs/decisions.md: field -> JSON type(s)
FIELDS = {"stream": str, "segment": int, "segment_name": str, "class": int, "class_name": str,
          "score": float, "margin": float, "rule": str, "t": int, "t_start": int, "events": int,
          "decoder_ns": int, "latency_ns": int, "label": str, "origin_ns": int, "e2e_latency_ns": int,
          "seq": int, "published_ns": int, "publish_latency_ns": int}
ADDED = ("seq", "published_ns", "publish_latency_ns", "e2e_latency_ns")  # e2e: at each sink's delivery


def decision_graph(folder, data, model: str, address: str, replay: str = "", robot: str = "",
                   console: bool = False):
    """replay of ``data`` -> snn -> decoder (count rule, k = 3) -> the decisions sink ``robot``
    at ``address`` and a jsonl sink writing ``folder``/decisions.jsonl (and a console sink);
    ``replay`` and ``robot``: extra TOML lines of those tables. Returns the config's path."""
    sinks = ["decoder -> robot", "decoder -> file"] + (["decoder -> console"] if console else [])
    return write_config(folder / "graph.toml", f"""
[graph]
summary = false

[source.replay]
type = "replay"
path = "{data}"
{replay}

{snn_decoder_tables(model, 3)}
[sink.robot]
type = "decisions"
address = "{address}"
{robot}

[sink.file]
type = "jsonl"
path = "{folder / 'decisions.jsonl'}"
""" + ('\n[sink.console]\ntype = "console"\n' if console else "")
        + linked("replay -> snn", "snn -> decoder", *sinks))


def test_every_decision_reaches_a_separate_consumer(tmp_path, capsys):
    data, n_samples = nmnist_subset(tmp_path / "data", per_class=6)
    classes = sorted(p.name for p in data.iterdir())
    model = random_model(tmp_path / "model.npz", classes)
    address = f"tcp://127.0.0.1:{free_port()}"
    consumer = subprocess.Popen([sys.executable, str(CONSUMER), address, "--json",
                                 "--count", str(n_samples), "--timeout", "90"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = tmp_path / "decisions.jsonl"
    config = decision_graph(tmp_path, data, model, address, robot="wait_s = 30.0", console=True)
    try:
        result = run(load(config))
        out, err = consumer.communicate(timeout=90)
    finally:
        consumer.kill()
    assert result.ok
    assert consumer.returncode == 0, err
    assert "missed" not in err and "malformed" not in err, err
    received = [json.loads(line) for line in out.splitlines()]
    written = [json.loads(line) for line in jsonl.read_text().splitlines()]
    # one decision per sample (early, or forced at the sample's end), every one delivered in order
    assert len(written) == n_samples
    assert [d["seq"] for d in received] == list(range(n_samples))
    for got, record in zip(received, written):
        assert {k: v for k, v in got.items() if k not in ADDED} == {
            k: v for k, v in record.items() if k != "e2e_latency_ns"}
        assert set(got) == set(FIELDS)
        for key, kind in FIELDS.items():
            assert isinstance(got[key], kind) and not isinstance(got[key], bool), (key, got[key])
        assert got["class_name"] == classes[got["class"]] and got["stream"] == "snn"
        assert got["publish_latency_ns"] >= got["decoder_ns"] >= 0
        assert got["latency_ns"] == got["decoder_ns"]  # the deprecated name, same value
    assert [d["segment"] for d in received] == list(range(n_samples))
    # the decisions are those of the same snn and decoder stages run in-process on the same
    # replay, and each carries its recording's class folder as the label
    stages = [SnnStage("snn", SnnParams(model=model)),
              DecoderStage("decoder", DecoderParams(model=model, rule="count", k=3))]
    in_process = [r for p in run_chain(Replay("replay", data).packets(), stages) for r in p.records]
    decided = lambda records: [{k: v for k, v in r.items() if k != "stream" and not k.endswith("_ns")}
                               for r in records]
    assert decided(written) == decided(in_process)
    assert [d["label"] for d in written] == [f.label for f in dataset_files(data)]
    # the console shows one readable line per decision
    lines = [line for line in capsys.readouterr().out.splitlines() if ", decoder " in line]
    assert len(lines) == n_samples
    assert lines[0].startswith(f"[snn] object 0: class {received[0]['class_name']} by {received[0]['rule']}")


def decision(i: int) -> dict:
    return {"stream": "s", "segment": i, "segment_name": None, "class": 1, "class_name": "one",
            "score": 3.0, "margin": 2.0, "rule": "count", "t": i, "t_start": 0, "events": 10,
            "decoder_ns": 1000, "latency_ns": 1000, "label": None}


def test_a_subscriber_that_stops_reading_costs_drops_never_a_block(tmp_path):
    address = f"ipc://{tmp_path}/decisions.sock"
    sink = DecisionsSink("robot", DecisionsParams(address=address, hwm=4, wait_s=10, linger_ms=0))
    ctx = zmq.Context()
    stuck = ctx.socket(zmq.SUB)
    stuck.setsockopt(zmq.RCVHWM, 4)
    stuck.setsockopt(zmq.SUBSCRIBE, b"decisions")
    stuck.connect(address)
    try:
        sink.consume(events_packet("cam", 0, empty_events(3), 10, 10))  # not decisions: ignored
        sink.consume(json_packet("s", 0, [{"not": "a decision"}]))
        n = 20_000
        for i in range(0, n, 100):
            sink.consume(json_packet("s", i, [decision(j) for j in range(i, i + 100)]))
        assert sink.subscribers == 1
        assert sink.ignored == 2
        assert sink.dropped > 0 and sink.published + sink.dropped == n == sink.seq
        first = stuck.recv_multipart()
        assert first[0] == b"decisions" and json.loads(first[1])["seq"] == 0
    finally:
        sink.close()
        stuck.close(linger=0)
        ctx.term()


def subscribed(sink: DecisionsSink, want: int, timeout_s: float = 30.0) -> bool:
    """Let ``sink`` read (un)subscriptions (an empty decision packet publishes nothing) until
    ``want`` subscribers match its topic; whether they did within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while sink.subscribers != want and time.monotonic() < deadline:
        sink.consume(json_packet("s", 0, []))
        time.sleep(0.01)
    return sink.subscribers == want


def drain(sock: zmq.Socket, wait_ms: int = 300) -> list[dict]:
    """Every decision ``sock`` receives until it has been quiet for ``wait_ms``."""
    got = []
    while sock.poll(wait_ms, zmq.POLLIN):
        got.append(json.loads(sock.recv_multipart()[1]))
    return got


def test_a_subscriber_that_leaves_and_returns_misses_only_what_was_published_meanwhile(tmp_path):
    """A PUB socket keeps nothing for absent subscribers: the decisions published while nobody
    listens are lost to everyone and counted as unheard; the sink goes on, and a subscriber that
    comes back receives from then on."""
    address = f"ipc://{tmp_path}/decisions.sock"
    sink = DecisionsSink("robot", DecisionsParams(address=address, linger_ms=0))
    ctx = zmq.Context()
    try:
        for visit, first in enumerate((0, 10)):
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, b"decisions")
            sub.connect(address)
            assert subscribed(sink, 1)
            sink.consume(json_packet("s", first, [decision(i) for i in range(first, first + 5)]))
            assert [d["seq"] for d in drain(sub)] == list(range(first, first + 5))
            sub.close(linger=0)  # the subscriber leaves
            assert subscribed(sink, 0)
            sink.consume(json_packet("s", first + 5, [decision(i) for i in range(first + 5, first + 10)]))
        assert sink.seq == 20 and sink.published == 10 and sink.unheard == 10 and sink.dropped == 0
    finally:
        sink.close()
        ctx.term()


def test_a_consumer_that_joins_a_running_graph_receives_every_decision_from_then_on(tmp_path, caplog):
    data, n_samples = nmnist_subset(tmp_path / "data", per_class=2)
    model = random_model(tmp_path / "model.npz", sorted(p.name for p in data.iterdir()))
    address = f"tcp://127.0.0.1:{free_port()}"
    jsonl = tmp_path / "decisions.jsonl"
    config = decision_graph(tmp_path, data, model, address, replay="speed = 1.0")
    results = []
    graph = threading.Thread(target=lambda: results.append(run(load(config))))
    caplog.set_level(logging.INFO, logger="pipeline.nodes.sinks")
    graph.start()
    deadline = time.monotonic() + 60
    while (not jsonl.exists() or len(jsonl.read_text().splitlines()) < 2) and time.monotonic() < deadline:
        time.sleep(0.02)  # two decisions published before anyone listens
    consumer = subprocess.run([sys.executable, str(CONSUMER), address, "--json", "--idle", "2",
                               "--timeout", "60"], check=False, capture_output=True, text=True, timeout=90)
    graph.join(60)
    assert results and results[0].ok
    assert consumer.returncode == 0 and "missed" not in consumer.stderr, consumer.stderr
    received = [json.loads(line) for line in consumer.stdout.splitlines()]
    written = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(written) == n_samples
    first = received[0]["seq"]
    assert 2 <= first < n_samples - 5  # joined late, well before the end
    assert [d["seq"] for d in received] == list(range(first, n_samples))
    assert [d["segment"] for d in received] == [d["segment"] for d in written[first:]]
    summary = next(r.getMessage() for r in caplog.records if "decisions on" in r.getMessage())
    unheard = int(re.search(r"(\d+) unheard", summary).group(1))
    assert first <= unheard <= first + 1  # + 1: a subscription that arrived during a send
    assert f"robot: {n_samples} decisions on {address}: {n_samples - unheard} published, 0 dropped" in summary
    # and the graph's metrics carry the same count (the summary table prints it)
    assert results[0].snapshots["robot"]["counters"]["unheard"] == unheard


@pytest.fixture
def curve_keys(tmp_path):
    """Certificates: the sink's, an accepted consumer's (robot, listed in clients/) and a
    stranger's, not listed."""
    for name in ("sink", "robot", "stranger"):
        write_keys(str(tmp_path / "keys"), name)
    (tmp_path / "keys" / "clients").mkdir()
    (tmp_path / "keys" / "clients" / "robot.key").write_bytes((tmp_path / "keys" / "robot.key").read_bytes())
    return tmp_path / "keys"


def test_a_curve_sink_serves_only_the_listed_consumer_and_counts_the_others(curve_keys):
    address = f"tcp://127.0.0.1:{free_port()}"
    sink = DecisionsSink("robot", DecisionsParams(
        address=address, wait_s=30, linger_ms=1000, curve_server=str(curve_keys / "sink"),
        curve_clients=str(curve_keys / "clients")))
    ctx = zmq.Context()
    intruders = {}
    for who in ("stranger", None):  # wrong keys, no keys
        sock = intruders[who] = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        if who:
            secure_receiver(sock, str(curve_keys / "sink"), str(curve_keys / who))
        sock.connect(address)
    consumer = subprocess.Popen([sys.executable, str(CONSUMER), address, "--json", "--count", "50",
                                 "--timeout", "60", "--server-key", str(curve_keys / "sink"),
                                 "--client-key", str(curve_keys / "robot")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sink.consume(json_packet("s", 0, [decision(i) for i in range(50)]))  # waits for robot
        out, err = consumer.communicate(timeout=60)
        assert consumer.returncode == 0, err
        deadline = time.monotonic() + 10
        while len(sink.refused) < 2 and time.monotonic() < deadline:
            sink.consume(json_packet("s", 0, []))
            time.sleep(0.05)
        assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(50))
        assert all(drain(sock, 100) == [] for sock in intruders.values())
        assert sink.refused["a key not in curve_clients"] >= 1
        assert sink.refused["no CURVE keys, or a failed handshake"] >= 1
        assert sink.published == 50 and sink.unheard == 0
        assert subscribed(sink, 0)  # the consumer left; the sink goes on
    finally:
        consumer.kill()
        sink.close()
        for sock in intruders.values():
            sock.close(linger=0)
        ctx.term()


def test_a_curve_sink_with_a_missing_certificate_is_a_param_error_naming_the_file(curve_keys):
    with pytest.raises(ParamError, match=rf"curve_server: {curve_keys / 'nobody'}.key_secret: not a readable"):
        DecisionsParams(address="tcp://127.0.0.1:5560", curve_server=str(curve_keys / "nobody"),
                        curve_clients=str(curve_keys / "clients")).check()
    with pytest.raises(ParamError, match="curve_clients: a CURVE decisions sink names"):
        DecisionsParams(curve_server=str(curve_keys / "sink")).check()
