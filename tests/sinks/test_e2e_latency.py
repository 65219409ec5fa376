"""End-to-end latency of decisions: the default graph replaying bundled samples in real time, one
process per node, read by a subscriber in this process; and what the sinks write when a packet's
origin is unknown."""

from __future__ import annotations

import json
import pathlib
import re
import threading
import time

import numpy as np
import zmq

from pipeline.core.packet import json_packet
from pipeline.nodes.basic import (
    ConsoleParams,
    ConsoleSink,
    JsonLinesParams,
    JsonLinesSink,
)
from pipeline.nodes.sinks import DecisionsParams, DecisionsSink
from pipeline.runtime.config import load
from pipeline.runtime.graph import run
from tests.pipeline.helpers import free_port
from tests.pipeline.test_origin import samples
from tests.sinks.helpers import demo_config

CONSOLE_DECISION = re.compile(r"\[snn\] object (\d+): class (\S+) by (\S+) \(score [\d.]+, margin [\d.]+\) "
                              r"([\d.]+) ms after onset, ([\d,]+) events; e2e ([\d.]+) ms, decoder \d+ us  "
                              r"true (\S+): (right|WRONG)$")


def realtime_graph(folder, address: str) -> str:
    """config.toml (denoise -> hots -> snn -> decoder -> console, jsonl) replaying three bundled
    samples at speed 1, plus a decisions sink on ``address``; returns the config's path."""
    data = samples(folder / "data", 3)
    path = pathlib.Path(demo_config(folder, name=f"e2e-{folder.name}"))
    text = path.read_text()
    text, paced = re.subn(r"(?m)^speed = 0\.0", "speed = 1.0", text)
    text, pointed = re.subn(r'(?m)^path = ".*/recordings/nmnist"', f'path = "{data}"', text)
    assert paced == 1 and pointed == 1, "config.toml's replay changed"
    path.write_text(text + f"""
[sink.robot]
type = "decisions"
address = "{address}"
wait_s = 30.0

[[link]]
from = "decoder"
to = "robot"
""")
    return str(path)


def test_every_decision_says_how_old_it_is_on_the_clock_of_its_consumer(tmp_path, capfd):
    address = f"tcp://127.0.0.1:{free_port()}"
    config = load(realtime_graph(tmp_path, address))
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"decisions")
    sub.connect(address)
    result = {}
    started = time.time_ns()
    graph = threading.Thread(target=lambda: result.update(outcome=run(config)), daemon=True)
    graph.start()
    received = []  # (message, host time of its arrival here)
    try:
        while graph.is_alive() or sub.poll(0):
            if sub.poll(100, zmq.POLLIN):
                frames = sub.recv_multipart()
                received.append((json.loads(frames[1]), time.time_ns()))
        graph.join()
    finally:
        sub.close(linger=0)
        ctx.term()
    ended = time.time_ns()
    outcome = result["outcome"]
    assert outcome.ok
    assert [m["seq"] for m, _ in received] == [0, 1, 2]  # one decision per sample, none lost
    for message, arrived in received:
        origin, e2e = message["origin_ns"], message["e2e_latency_ns"]
        assert type(origin) is int and type(e2e) is int
        assert started < origin <= message["published_ns"] <= arrived < ended
        assert e2e == message["published_ns"] - origin
        assert arrived - origin >= e2e  # the consumer's own clock agrees: it got it later still
        assert e2e >= message["decoder_ns"]  # the decoder's time is part of the way
    origins = [m["origin_ns"] for m, _ in received]
    assert origins == sorted(origins)

    # the JSON lines hold the same decisions from the same packets, timed at their own writing
    written = [json.loads(line) for line in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert [r["origin_ns"] for r in written] == origins
    assert all(0 <= r["e2e_latency_ns"] and r["origin_ns"] + r["e2e_latency_ns"] < ended for r in written)

    # the console: one labelled line per decision, then the stream's closing line
    out = capfd.readouterr().out
    lines = [CONSOLE_DECISION.match(line) for line in out.splitlines() if line.startswith("[snn] object")]
    assert len(lines) == 3 and all(lines), out
    for match, message in zip(lines, received):
        decision = message[0]
        assert (int(match[1]), match[2], match[3], int(match[5].replace(",", "")), match[7]) == (
            decision["segment"], decision["class_name"], decision["rule"], decision["events"],
            decision["label"])
        assert float(match[4]) == round((decision["t"] - decision["t_start"]) / 1e3, 1)
    right = sum(m["class_name"] == m["label"] for m, _ in received)
    closing = re.search(r"(?m)^\[snn\] end of stream: 3 decisions, 0 abstentions, (\d)/3 right; "
                        r"e2e p50 ([\d.]+) ms, p99 ([\d.]+) ms$", out)
    assert closing and int(closing[1]) == right, out
    printed = sorted((float(m[6]), m[6]) for m in lines)  # the median of three is one of them
    assert closing[2] == printed[1][1] and printed[1][0] <= float(closing[3]) <= printed[2][0]

    # the sink's metrics sample the same packets after delivering them: never less than the
    # records say; the summary table prints them
    robot = outcome.snapshots["robot"]
    assert robot["packets_in"] == len(received)  # one decision per packet: samples pair up
    assert robot["e2e_p50_us"] * 1e3 + 100 >= np.percentile([m["e2e_latency_ns"] for m, _ in received], 50)
    table = [line.split() for line in out.splitlines() if line.startswith("robot ")]
    assert table and table[-1][-2:] == [f"{robot['e2e_p50_us'] / 1e3:,.1f}", f"{robot['e2e_p99_us'] / 1e3:,.1f}"]


def test_a_packet_of_unknown_origin_gives_records_of_unknown_latency(tmp_path, capsys):
    """Origin 0 (a source that did not stamp it, an old sender) means unknown: the records say
    null, never a latency measured from the epoch."""
    record = {"stream": "snn", "segment": 4, "segment_name": "object-4", "t": 5_000, "t_start": 3_000,
              "events": 12, "decoder_ns": 12_000, "latency_ns": 12_000, "label": "1", "class": None,
              "class_name": None, "score": 0.0, "margin": 0.0, "rule": "abstain",
              "reason": "the network got no evidence in this segment"}
    unknown = json_packet("snn", 0, [record])
    known = json_packet("snn", 1, [record])
    known.header = known.header.with_(origin_ns=time.time_ns() - 2_000_000)  # 2 ms old

    jsonl = JsonLinesSink("file", JsonLinesParams(path=str(tmp_path / "d.jsonl")))
    console = ConsoleSink("console", ConsoleParams())
    address = f"ipc://{tmp_path}/decisions.sock"
    robot = DecisionsSink("robot", DecisionsParams(address=address, wait_s=10, linger_ms=0))
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(address)
    try:
        for sink in (jsonl, console, robot):
            sink.consume(unknown)
            sink.consume(known)
        console.finish()
        published = [json.loads(sub.recv_multipart()[1]) for _ in range(2)]
    finally:
        for sink in (jsonl, robot):
            sink.close()
        sub.close(linger=0)
        ctx.term()
    written = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    for first, second in (written, published):
        assert first["origin_ns"] == 0 and first["e2e_latency_ns"] is None
        assert second["origin_ns"] == known.header.origin_ns and second["e2e_latency_ns"] >= 2_000_000
    assert published[1]["e2e_latency_ns"] == published[1]["published_ns"] - known.header.origin_ns
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("[snn] object 4: no decision (the network got no evidence in this segment) 2.0 ms "
                        "after onset, 12 events; e2e unknown, decoder 12 us  true 1")
    assert re.fullmatch(r"\[snn\] object 4: no decision \(.*\) 2\.0 ms after onset, 12 events; "
                        r"e2e [\d.]+ ms, decoder 12 us  true 1", lines[1])
    # abstentions are counted as such; the latency percentiles cover the known one only
    assert re.fullmatch(r"\[snn\] end of stream: 0 decisions, 2 abstentions; e2e p50 ([\d.]+) ms, "
                        r"p99 \1 ms", lines[2])
