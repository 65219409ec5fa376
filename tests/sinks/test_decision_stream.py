"""The decision stream end to end: real N-MNIST replay -> snn -> decoder -> decisions PUB, JSON
lines and console; read by examples/decision_consumer.py in a separate process."""

from __future__ import annotations

import json
import subprocess
import sys

import zmq

from pipeline.core.events import empty_events
from pipeline.core.packet import events_packet, json_packet
from pipeline.core.stage import run_chain
from pipeline.nodes.sinks import DecisionsParams, DecisionsSink
from pipeline.nodes.snn import DecoderParams, DecoderStage, SnnParams, SnnStage
from pipeline.runtime.config import load
from pipeline.runtime.graph import run
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


def test_every_decision_reaches_a_separate_consumer(tmp_path, capsys):
    data, n_samples = nmnist_subset(tmp_path / "data", per_class=6)
    classes = sorted(p.name for p in data.iterdir())
    model = random_model(tmp_path / "model.npz", classes)
    address = f"tcp://127.0.0.1:{free_port()}"
    consumer = subprocess.Popen([sys.executable, str(CONSUMER), address, "--json",
                                 "--count", str(n_samples), "--timeout", "90"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = tmp_path / "decisions.jsonl"
    config = write_config(tmp_path / "graph.toml", f"""
[graph]
summary = false

[source.replay]
type = "replay"
path = "{data}"

{snn_decoder_tables(model, 3)}
[sink.robot]
type = "decisions"
address = "{address}"
wait_s = 30.0

[sink.file]
type = "jsonl"
path = "{jsonl}"

[sink.console]
type = "console"
""" + linked("replay -> snn", "snn -> decoder", "decoder -> robot", "decoder -> file",
             "decoder -> console"))
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
