"""evpipe on both ends of ROS 2 links, with separate rclpy processes (tests/ros2/subscriber.py,
publisher.py: rclpy and the message packages, no evpipe code) on a domain of this run's own,
discovery kept on this host.

- ros2 sink -> a robot: a real Prophesee recording replayed as EventPacket messages (every
  packet, seq without gaps, the EVT 3.0 payloads decoding to the recording's events) and the
  decisions of a real N-MNIST graph as Decision messages (every field equal to the JSON lines
  sink's record of the same decision).
- a camera driver -> ros2_source: the EVT 3.0 words of a real recording as a driver publishes
  them; the events equal the file's; messages left out are counted from the seq numbers, a
  message of another encoding is rejected and the source goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pipeline.nodes.ros2 import Ros2Source, Ros2SourceParams
from pipeline.runtime.config import load
from pipeline.runtime.graph import run
from sensors import ros_msgs
from sensors.info import info
from sensors.prophesee import decode_words
from sensors.readers import read_all
from tests.conftest import ROOT
from tests.pipeline.helpers import linked, snn_decoder_tables, write_config
from tests.sinks.helpers import nmnist_subset, random_model

HERE = ROOT / "tests" / "ros2"


@pytest.fixture(scope="module", autouse=True)
def ros_domain():
    """A ROS 2 domain of this run (from the process id) with discovery on localhost only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
        patch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        ros_msgs.load()  # builds the message packages once (a few seconds on a fresh machine)
        yield


def rclpy_process(script: str, *args: str) -> subprocess.Popen:
    """Start a tests/ros2 script with the built message packages importable."""
    env = dict(os.environ, **ros_msgs.environment())
    return subprocess.Popen([sys.executable, str(HERE / script), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_robot_receives_every_packet_and_decision(tmp_path, recordings):
    raw = recordings / "prophesee" / "evt3_sample.raw"
    data, n_samples = nmnist_subset(tmp_path / "data", per_class=2)
    model = random_model(tmp_path / "model.npz", sorted(p.name for p in data.iterdir()))
    jsonl = tmp_path / "decisions.jsonl"
    out = tmp_path / "robot.npz"
    robot = rclpy_process("subscriber.py", str(out), "--events", "/cam/events", "--decisions",
                          "/cam/decisions", "--idle", "8", "--timeout", "90")
    assert robot.stdout.readline().strip() == "ready"
    config = write_config(tmp_path / "graph.toml", f"""
[graph]
summary = false
runner = "threads"

[source.camera]
type = "replay"
path = "{raw}"

[source.digits]
type = "replay"
path = "{data}"

{snn_decoder_tables(model, 3)}
[sink.ros]
type = "ros2"
events_topic = "/cam/events"
decisions_topic = "/cam/decisions"
depth = 1000
wait_s = 30.0

[sink.file]
type = "jsonl"
path = "{jsonl}"
""" + linked("camera -> ros", "digits -> snn", "snn -> decoder", "decoder -> ros", "decoder -> file"))
    try:
        result = run(load(config))
        stdout, stderr = robot.communicate(timeout=120)
    finally:
        robot.kill()
    assert result.ok
    assert robot.returncode == 0, stderr

    got = np.load(out)
    n = len(got["seq"])
    assert n >= 5 and (got["seq"] == np.arange(n)).all()  # every packet, in order, no gap
    assert set(got["encoding"]) == {"evt3"}
    assert (got["width"] == 1280).all() and (got["height"] == 720).all()
    assert (got["time_base"] == 0).all()  # evt3_sample's times are within the first 2**24 us
    assert (got["stamp_ns"] > 0).all() and (got["received_ns"] >= got["stamp_ns"]).all()
    words = got["payload"].view("<u2")
    events = np.concatenate(list(decode_words("robot", "evt3", words, 0, 1280, 720, "faery")))
    _, source = read_all(raw)
    assert len(events) == len(source)
    for field in "txyp":
        assert (events[field] == source[field]).all(), field

    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    decisions = json.loads((tmp_path / "robot.npz.json").read_text())
    assert len(records) == n_samples and len(decisions) == n_samples
    for seq, (record, message) in enumerate(zip(records, sorted(decisions, key=lambda d: d["seq"]))):
        assert message["seq"] == seq
        for key in ("stream", "segment", "segment_name", "class_name", "score", "margin", "rule",
                    "t", "t_start", "events", "decoder_ns", "origin_ns"):
            assert message[key] == record[key], key
        assert message["class_id"] == (-1 if record["class"] is None else record["class"])
        assert message["label"] == (record["label"] or "") and message["reason"] == record.get("reason", "")
        assert message["e2e_latency_ns"] == message["published_ns"] - message["origin_ns"] > 0
        assert message["stamp_ns"] == message["published_ns"]
        assert 0 < message["publish_latency_ns"] < 10**10


def fed_by_driver(raw, topic: str, *driver_args: str) -> tuple[np.ndarray, Ros2Source, str]:
    """A ros2_source on ``topic`` fed by tests/ros2/publisher.py with the EVT 3.0 words of
    ``raw``: its events until as many as the file holds arrived or the driver has exited (it
    lingers a second after its last message), the source, and the driver's output."""
    expected = info(raw)["events"]
    source = Ros2Source("ros", Ros2SourceParams(topic=topic, node_name="evpipe_in", depth=1000))
    driver = rclpy_process("publisher.py", str(raw), "--topic", topic, "--linger", "1", *driver_args)
    threading.Thread(target=lambda: (driver.wait(), time.sleep(0.5), source.stop()), daemon=True).start()
    chunks, total = [], 0
    try:
        for packet in source.packets():
            assert packet.header.origin_ns > 0 and packet.header.width == 1280
            chunks.append(packet.records)
            total += len(packet.records)
            if total >= expected:
                break
        stdout, stderr = driver.communicate(timeout=60)
    finally:
        source.stop()
        source.close()
        driver.kill()
    assert driver.returncode == 0, stderr
    return (np.concatenate(chunks) if chunks else np.empty(0)), source, stdout


def test_a_camera_driver_feeds_the_source(recordings):
    raw = recordings / "prophesee" / "evt3_sample.raw"
    events, source, _ = fed_by_driver(raw, "/driver/events", "--bytes", "16384")
    _, expected = read_all(raw)
    assert len(events) == len(expected)
    for field in "txyp":
        assert (events[field] == expected[field]).all(), field
    assert source.dropped == 0


def test_messages_left_out_are_drops_and_a_wrong_encoding_is_rejected(recordings):
    raw = recordings / "prophesee" / "evt3_test_pedestrians.raw"
    events, source, stdout = fed_by_driver(raw, "/lossy/events", "--bytes", "1024", "--drop", "4",
                                           "--mono", "5")
    assert 0 < len(events) < info(raw)["events"]
    assert source.rejected == 1  # the "mono" message arrived, was left out, and is no drop
    total = int(stdout.split()[1])  # "published N messages": seq numbers 0 .. N-1
    last = max(k for k in range(total) if k % 4 != 3)  # a gap shows once a later message arrives
    assert source.dropped == sum(1 for k in range(last) if k % 4 == 3) >= 5
