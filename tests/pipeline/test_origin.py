"""Origins (``Header.origin_ns``, when the source obtained the events): on the wire, through the
runtime's copy rule in a real worker, and through real graphs of threads and processes."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import zmq

from pipeline.core import wire
from pipeline.core.events import empty_events
from pipeline.core.packet import Packet, Segment, eos_packet, events_packet
from pipeline.nodes.snn import DecoderParams, DecoderStage, SnnParams, SnnStage
from pipeline.runtime.config import load
from pipeline.runtime.graph import run
from pipeline.runtime.links import Receiver, Sender
from pipeline.runtime.worker import Worker, default_address
from sensors.replay import Replay
from tests.conftest import ROOT
from tests.pipeline.helpers import linked, snn_decoder_tables, write_config
from tests.sinks.helpers import random_model

BUNDLED = ROOT / "recordings" / "nmnist"


def samples(folder, count: int):
    """A dataset folder of symlinks to the first bundled N-MNIST sample of ``count`` classes."""
    for class_folder in sorted(BUNDLED.iterdir())[:count]:
        (folder / class_folder.name).mkdir(parents=True)
        first = min(class_folder.glob("*.bin"))
        os.symlink(first, folder / class_folder.name / first.name)
    return folder


def test_origin_round_trips_and_old_headers_decode_with_none():
    packet = events_packet("cam", 3, empty_events(2), 34, 34, Segment(1, start=True),
                           origin_ns=1_764_340_000_122_981_004)
    frames = wire.encode(packet, sent_ns=1_764_340_000_123_456_789)
    assert json.loads(frames[1])["origin_ns"] == 1_764_340_000_122_981_004
    assert wire.decode(frames).header.origin_ns == 1_764_340_000_122_981_004

    # a header written before origin_ns existed, with a field this reader does not know
    head = json.loads(frames[1])
    del head["origin_ns"]
    head["from_the_future"] = {"any": ["value"]}
    old = wire.decode([frames[0], json.dumps(head).encode(), bytes(frames[2])])
    assert old.header.origin_ns == 0
    assert old.header == packet.header.with_(origin_ns=0, sent_ns=1_764_340_000_123_456_789)

    for bad in ("1764340000122981004", 1.5, True, -1):
        head["origin_ns"] = bad
        with pytest.raises(wire.Malformed) as caught:
            wire.decode([frames[0], json.dumps(head).encode(), bytes(frames[2])])
        assert caught.value.reason == "header" and "origin_ns" in str(caught.value)


def test_the_runner_gives_each_output_the_origin_of_its_input_and_finish_the_last(tmp_path):
    """A real decoder worker between real links, the test playing its upstream snn node and
    its downstream sink. Each spikes packet carries its own origin; the decoder (whose records
    are made without any) must emit each decision with the origin of the packet whose processing
    produced it, and the forced decision of finish() with the origin of the last input."""
    data = samples(tmp_path / "data", 3)
    model = random_model(tmp_path / "model.npz", [str(i) for i in range(10)])
    config = load(write_config(tmp_path / "graph.toml", f"""
[source.replay]
type = "replay"
path = "{data}"

{snn_decoder_tables(model, 40)}
[sink.out]
type = "jsonl"
path = "{tmp_path / 'out.jsonl'}"
""" + linked("replay -> snn", "snn -> decoder", "decoder -> out")))
    snn = SnnStage("snn", SnnParams(model=model))
    spikes = [out for packet in Replay("replay", data).packets() for out in snn.process(packet)]
    spikes = spikes[:-1]  # the last segment's end marker never comes: finish() must decide
    base = time.time_ns() - 10**9  # origins one second old and 1 us apart
    fed = [Packet(p.header.with_(stream="snn", seq=i, origin_ns=base + 1000 * i), p.records)
           for i, p in enumerate(spikes)]
    # which inputs produce decisions: the same decoder run in-process on the same packets
    reference = DecoderStage("decoder", DecoderParams(model=model, rule="count", k=40))
    producing = [i for i, p in enumerate(fed) if reference.process(p)]
    assert producing and reference.finish()  # early decisions, and one forced at the end
    expected = [base + 1000 * i for i in producing] + [fed[-1].header.origin_ns]

    ctx = zmq.Context()
    upstream, downstream = config.inputs("decoder")[0], config.outputs("decoder")[0]
    sender = Sender(ctx, default_address(upstream, "threads", ""))
    receiver = Receiver(ctx, default_address(downstream, "threads", ""))
    runner = Worker(config, ["decoder"], ctx)
    final = {}
    thread = threading.Thread(target=lambda: final.update(runner.run()["decoder"]), daemon=True)
    thread.start()
    try:
        for packet in fed:
            sender.send(packet)
        sender.send(eos_packet("snn", len(fed)))
        received = []
        while True:
            packet = receiver.receive(timeout_ms=30_000)
            assert packet is not None, "the decoder sent nothing for 30 s"
            if packet.is_eos:
                break
            received.append(packet)
        thread.join(30)
    finally:
        sender.close()
        receiver.close()
        ctx.term()
    assert [p.header.origin_ns for p in received] == expected
    assert [r["rule"] for p in received for r in p.records][-1] == "forced"
    # every input had an origin a second old: the runner's end-to-end samples say so
    assert not runner.failed and final["e2e_p50_us"] >= 1e6


@pytest.mark.parametrize("runner", ["threads", "processes"])
def test_origins_are_kept_through_a_passthrough_and_a_stage_that_makes_new_packets(tmp_path, runner):
    """replay -> direct, replay -> passthrough -> passed, replay -> denoise -> filtered (denoise
    returns packets of its own, with no origin): each JSON-lines sink writes one summary per
    sample, which must carry the origin of the sample's last packet, the same in all three."""
    data = samples(tmp_path / "data", 3)
    sinks = ("direct", "passed", "filtered")
    config = write_config(tmp_path / "graph.toml", f"""
[graph]
runner = "{runner}"
summary = false

[source.replay]
type = "replay"
path = "{data}"

[stage.pass]
type = "passthrough"

[stage.denoise]
type = "denoise"
duration_us = 20000
per_segment = true
""" + "".join(f"""
[sink.{name}]
type = "jsonl"
path = "{tmp_path / name}.jsonl"
""" for name in sinks) + linked("replay -> direct", "replay -> pass", "pass -> passed",
                                  "replay -> denoise", "denoise -> filtered"))
    started = time.time_ns()
    result = run(load(config))
    ended = time.time_ns()
    assert result.ok
    written = {name: [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
               for name in sinks}
    origins = {name: [r["origin_ns"] for r in records] for name, records in written.items()}
    assert len(origins["direct"]) == 3
    assert origins["passed"] == origins["direct"] == origins["filtered"]
    assert started < origins["direct"][0] < origins["direct"][1] < origins["direct"][2] < ended
    # denoise dropped events, so its summaries differ but for the origin: it really made new packets
    assert [r["events"] for r in written["filtered"]] != [r["events"] for r in written["direct"]]
    for records in written.values():
        for record in records:
            assert 0 <= record["e2e_latency_ns"] <= ended - record["origin_ns"]
    # the sinks' end-to-end samples cover the same packets from the same origins
    assert all(result.snapshots[name]["e2e_p50_us"] is not None for name in sinks)
    assert result.snapshots["replay"]["e2e_p50_us"] is None  # a source is where origins start

