"""ROS 2: the ros2 sink's EventPacket link to an rclpy subscriber vs our ZeroMQ link, and the
EVT 3.0 encoder vs our EVT 3.0 decoder; the same packets of a real recording on both sides.

Throughput: packets of 10,000 events cut from evt3_sample.raw (time-shifted copies, 300 packets;
x / 4 and y / 3, the 320 x 240 sensor ``bench.bench_links`` declares), sent as fast as possible from this process to a receiver in a separate process. ROS 2 side:
``sensors.ros2.EventPublisher`` (EVT 3.0 encoding included, reliable, KEEP_LAST as deep as the
run, Fast DDS over loopback) to an rclpy subscription that takes each message; ZeroMQ side:
``pipeline.runtime.links`` lossless over tcp loopback to a validating ``Receiver``
(``bench.bench_links``). Rate at the receiver, first to last message; best of 3 alternating
rounds. Latency: 1,000-event packets paced one per ms for 2 s; receiver's host time minus the
send time (``header.stamp`` set right before ``publish``; the ZeroMQ header's ``sent_ns``), p99.
Encoder vs decoder: all of evt3_sample, best of 5, events/s. No target this round.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from bench import bench_links
from bench.common import RECORDINGS, best_of, record
from kernels.evt3 import encode
from pipeline.core.events import EVENT_DTYPE
from sensors.prophesee import decode_words
from sensors.readers import read_all

RAW = RECORDINGS / "prophesee" / "evt3_sample.raw"
SIZE, COUNT, ROUNDS = 10_000, 300, 3
LATENCY_S = 2.0
TOPIC = "/bench/events"


def packets_of(events: np.ndarray, size: int, count: int) -> list[np.ndarray]:
    """``count`` packets of ``size`` events taken in order from ``events`` (1280 x 720 scaled to
    320 x 240), later copies shifted by the recording's span so time keeps going forward."""
    span = int(events["t"][-1] - events["t"][0]) + 1
    events = events.copy()
    events["x"] //= 4
    events["y"] //= 3
    out = []
    for i in range(count):
        start = (i * size) % (len(events) - size)
        chunk = events[start:start + size].copy()
        chunk["t"] += span * (i * size // (len(events) - size))
        out.append(chunk)
    return out


def environment() -> None:
    """This run's own ROS 2 domain, discovery on this host only (children inherit them)."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


# receiving side (a separate process): a plain rclpy subscription --------------------------------
def receive(count: int) -> dict:
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    from sensors.ros_msgs import EVENT_PACKET, load

    cls = load()[EVENT_PACKET.type_name]
    rclpy.init()
    node = rclpy.create_node("bench_subscriber")
    got = []

    def on_message(message):
        now = time.time_ns()
        got.append((time.perf_counter(), now - (message.header.stamp.sec * 10**9 + message.header.stamp.nanosec),
                    len(message.events)))

    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=count, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(cls, TOPIC, on_message, qos)
    print("ready", flush=True)
    idle = time.monotonic()
    while len(got) < count and time.monotonic() - idle < 5.0:
        before = len(got)
        rclpy.spin_once(node, timeout_sec=0.05)
        idle = time.monotonic() if len(got) > before else idle
    node.destroy_node()
    rclpy.shutdown()
    return {"received": len(got), "seconds": got[-1][0] - got[0][0] if got else 0.0,
            "transit_ns": [g[1] for g in got], "bytes": sum(g[2] for g in got)}


def measure_ros(packets: list[np.ndarray], pace_s: float = 0.0) -> dict:
    """Publish ``packets`` with the ros2 sink's publisher to a subscriber process."""
    from sensors.ros2 import EventPublisher, RosNode

    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_ros2", str(len(packets))],
                            stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("ROS 2 subscriber did not start")
    ros = RosNode("bench_publisher")
    try:
        publisher = EventPublisher(ros, TOPIC, RosNode.qos("reliable", "volatile", len(packets)))
        if not ros.wait_for_subscribers(publisher.publisher, 1, 30.0):
            raise RuntimeError("ROS 2 subscriber not matched")
        time.sleep(0.5)  # the subscriber's side of the match
        start = time.perf_counter()
        for seq, chunk in enumerate(packets):
            if pace_s:
                while time.perf_counter() < start + seq * pace_s:
                    time.sleep(pace_s / 10)
            publisher.publish(chunk, 320, 240, time.time_ns())
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
        ros.close()
    result = json.loads(out)
    if result["received"] != len(packets):
        raise RuntimeError(f"ROS 2: {result['received']} of {len(packets)} packets")
    return result


def run() -> list[dict]:
    environment()
    _, events = read_all(RAW)
    records = []

    words, _ = encode(events, np.zeros(2, np.int64))
    encode_s = best_of(lambda: encode(events, np.zeros(2, np.int64)))
    decode_s = best_of(lambda: list(decode_words("bench", "evt3", words, 0, 1280, 720, "faery")))
    records.append(dict(record("EVT 3.0 encoder (numba) vs our EVT 3.0 decoder, evt3_sample",
                               len(events) / encode_s, len(events) / decode_s, "events/s", None),
                        words_per_event=len(words) / len(events)))

    packets = packets_of(events, SIZE, COUNT)
    rates = {"ros": 0.0, "zmq": 0.0}
    for _ in range(ROUNDS):  # alternate, keep the best of each: the machine is shared
        result = measure_ros(packets)
        rates["ros"] = max(rates["ros"], (COUNT - 1) * SIZE / result["seconds"])
        result = bench_links.measure("ours", bench_links.free_tcp(), packets)
        rates["zmq"] = max(rates["zmq"], (COUNT - 1) * SIZE / result["seconds"])
    records.append(record(f"ros2 EventPacket (evt3) to rclpy vs ZeroMQ link, {SIZE:,}-event packets",
                          rates["ros"], rates["zmq"], "events/s", None))

    paced = packets_of(events, 1000, int(LATENCY_S * 1000))
    p99 = {}
    for kind in ("ros", "zmq"):
        result = (measure_ros(paced, pace_s=1e-3) if kind == "ros" else
                  bench_links.measure("ours", bench_links.free_tcp(), paced, pace_s=1e-3))
        transit = np.asarray(result["transit_ns"]) / 1e6
        p99[kind] = float(np.percentile(transit, 99))
        print(f"  latency {kind}: p50 {np.percentile(transit, 50):.3f} ms, p99 {p99[kind]:.3f} ms")
    records.append(record("latency p99, 1,000-event packets at 1 per ms: ros2 vs ZeroMQ link",
                          p99["ros"], p99["zmq"], "ms", None, ratio=p99["zmq"] / p99["ros"]))
    return records


if __name__ == "__main__":
    print(json.dumps(receive(int(sys.argv[1]))))
