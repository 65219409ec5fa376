"""A robot's side, written with rclpy and the message packages only (no evpipe code): subscribes
to an event_camera_msgs/EventPacket topic and an evpipe_msgs/Decision topic, and saves what
arrives. Ends once messages have arrived and none came for --idle seconds, or at --timeout.

    python subscriber.py OUT.npz --events /events --decisions /decisions [--idle 3] [--timeout 60]

OUT.npz: per EventPacket message seq, width, height, time_base, encoding, header stamp (ns),
receive time (ns), the payload bytes concatenated (``payload``) with ``offsets``; OUT.npz.json:
the Decision messages, every field, one object each.
"""

import argparse
import json
import time

import numpy as np
import rclpy
from event_camera_msgs.msg import EventPacket
from evpipe_msgs.msg import Decision
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--events", default="/events")
    parser.add_argument("--decisions", default="/decisions")
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--depth", type=int, default=1000)
    args = parser.parse_args()

    rclpy.init()
    node = rclpy.create_node("robot")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=args.depth,
                     reliability=ReliabilityPolicy.RELIABLE)
    packets, decisions = [], []

    def on_packet(m):
        packets.append((time.time_ns(), m.seq, m.width, m.height, m.time_base, m.encoding,
                        m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, bytes(m.events)))

    def on_decision(m):
        record = {name: getattr(m, name) for name in m.get_fields_and_field_types() if name != "header"}
        record["stamp_ns"] = m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
        decisions.append(record)

    node.create_subscription(EventPacket, args.events, on_packet, qos)
    node.create_subscription(Decision, args.decisions, on_decision, qos)
    print("ready", flush=True)
    start = last = time.monotonic()
    count = 0
    while time.monotonic() - start < args.timeout:
        rclpy.spin_once(node, timeout_sec=0.05)
        if len(packets) + len(decisions) != count:
            count, last = len(packets) + len(decisions), time.monotonic()
        elif count and time.monotonic() - last > args.idle:
            break
    payloads = [p[7] for p in packets]
    columns = list(zip(*[p[:7] for p in packets])) or [()] * 7
    np.savez(args.out, received_ns=np.array(columns[0], np.int64), seq=np.array(columns[1], np.int64),
             width=np.array(columns[2], np.int64), height=np.array(columns[3], np.int64),
             time_base=np.array(columns[4], np.int64), encoding=np.array(columns[5], str),
             stamp_ns=np.array(columns[6], np.int64),
             payload=np.frombuffer(b"".join(payloads), np.uint8),
             offsets=np.cumsum([0] + [len(p) for p in payloads]))
    with open(args.out + ".json", "w") as handle:
        json.dump(decisions, handle)
    print(f"{len(packets)} packets, {len(decisions)} decisions", flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
