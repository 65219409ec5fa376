"""A camera driver's side, written with rclpy and the message package only (no evpipe code):
publishes the EVT 3.0 words of a Prophesee RAW file as event_camera_msgs/EventPacket messages
(encoding "evt3", raw words as a driver forwards them), --bytes bytes a message, once a
subscriber has matched; then waits --linger seconds for reliable delivery. --drop K leaves out
every K-th message (its seq number included), as a lossy link would; --mono N sends message N
with encoding "mono" (a mistake the receiver must survive).

    python publisher.py FILE.raw --topic /events [--bytes 16384] [--width 1280 --height 720]
"""

import argparse
import time

import rclpy
from event_camera_msgs.msg import EventPacket
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy


def raw_words(path):
    """The bytes after the ``%`` header lines of a Prophesee RAW file."""
    data = open(path, "rb").read()
    offset = 0
    while data[offset:offset + 1] == b"%":
        end = data.index(b"\n", offset) + 1
        line, offset = data[offset:end], end
        if line.startswith(b"% end"):
            break
    return data[offset:]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--topic", default="/events")
    parser.add_argument("--bytes", type=int, default=16384)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--wait", type=float, default=30.0)
    parser.add_argument("--linger", type=float, default=3.0)
    parser.add_argument("--drop", type=int, default=0)
    parser.add_argument("--mono", type=int, default=-1)
    args = parser.parse_args()

    words = raw_words(args.file)
    rclpy.init()
    node = rclpy.create_node("camera_driver")
    qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, depth=1, reliability=ReliabilityPolicy.RELIABLE)
    publisher = node.create_publisher(EventPacket, args.topic, qos)
    deadline = time.monotonic() + args.wait
    while publisher.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            raise SystemExit("no subscriber")
        rclpy.spin_once(node, timeout_sec=0.05)
    for seq, start in enumerate(range(0, len(words), args.bytes)):
        if args.drop and seq % args.drop == args.drop - 1:
            continue
        message = EventPacket(height=args.height, width=args.width, seq=seq,
                              encoding="mono" if seq == args.mono else "evt3",
                              is_bigendian=False, events=words[start:start + args.bytes])
        message.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(message)
    print(f"published {seq + 1} messages", flush=True)
    time.sleep(args.linger)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
