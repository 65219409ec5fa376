"""Malformed messages sent over a real socket to a running stage: counted by reason, stage serves on."""

from __future__ import annotations

import json
import threading

import numpy as np
import zmq

from pipeline.core import wire
from pipeline.core.packet import eos_packet, events_packet, json_packet
from pipeline.runtime.config import parse
from pipeline.runtime.links import Receiver
from pipeline.runtime.worker import Worker
from sensors.readers import read_all
from tests.conftest import AEDAT4_SAMPLE
from tests.pipeline.helpers import free_port


def config_text(inbound: str, outbound: str) -> str:
    return f"""
[source.camera]
type = "replay"
path = "{AEDAT4_SAMPLE}"

[stage.pass]
type = "passthrough"

[sink.screen]
type = "console"

[[link]]
from = "camera"
to = "pass"
address = "{inbound}"

[[link]]
from = "pass"
to = "screen"
address = "{outbound}"
"""


def edit_header(frames, **changes):
    header = json.loads(bytes(frames[1]))
    header.update(changes)
    return [frames[0], json.dumps(header).encode(), frames[2]]


def test_each_malformed_message_is_counted_and_the_stage_keeps_serving():
    inbound, outbound = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    config = parse(config_text(inbound, outbound), "malformed.toml")
    ctx = zmq.Context()
    upstream = ctx.socket(zmq.DEALER)  # plays the camera: raw frames, good and bad
    upstream.bind(inbound)
    downstream = Receiver(ctx, outbound)
    runner = Worker(config, ["pass"], ctx)
    final = {}
    thread = threading.Thread(target=lambda: final.update(runner.run()["pass"]))
    thread.start()

    _, events = read_all(AEDAT4_SAMPLE)
    chunk = np.ascontiguousarray(events[:200])
    good = wire.encode(events_packet("camera", 0, chunk, 320, 240))
    good = [bytes(memoryview(f)) for f in good]
    out_of_bounds = chunk.copy()
    out_of_bounds["x"][17] = 320
    bad = {
        "frame_count": [good[0], good[1]],
        "header": [good[0], b"\x00garbage", good[2]],
        "version": edit_header(good, v=2),
        "topic": edit_header(good, stream="other"),
        "dtype": edit_header(good, dtype="no-such-records"),
        "payload_size": [good[0], good[1], good[2][:-3]],
        "bounds": [bytes(memoryview(f)) for f in wire.encode(events_packet("camera", 0, out_of_bounds, 320, 240))],
        "json_payload": [b"camera", edit_header([b"", wire.encode(json_packet("camera", 0, [{}]))[1], b""],
                                                count=1)[1], b"{not json"],
    }
    for seq, (reason, frames) in enumerate(bad.items()):
        upstream.send_multipart(frames)
        upstream.send_multipart(edit_header(good, seq=seq))
        packet = downstream.receive(timeout_ms=10_000)
        assert packet is not None, f"no packet after a {reason} message"
        assert packet.header.stream == "pass" and packet.header.seq == seq
        np.testing.assert_array_equal(packet.records, chunk)
    upstream.send_multipart([bytes(memoryview(f)) for f in wire.encode(eos_packet("camera", len(bad)))])
    end = downstream.receive(timeout_ms=10_000)
    assert end is not None and end.is_eos
    thread.join(10)
    assert not thread.is_alive()
    assert final["malformed"] == {reason: 1 for reason in bad}
    assert final["records_in"] == final["records_out"] == 200 * len(bad)
    assert final["error"] is None and not runner.failed
    downstream.close()
    upstream.close(0)
    ctx.term()
