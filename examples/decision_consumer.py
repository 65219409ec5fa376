#!/usr/bin/env python3
"""Receive evpipe decisions: a standalone consumer to copy into a robot controller or ROS 2 node.

Needs only pyzmq and the standard library. The protocol (docs/decisions.md): connect a SUB socket
to the decisions sink's address, subscribe to its topic; every message has two frames, the topic
and one UTF-8 JSON object (one decision). ``seq`` grows by one per decision, so a jump means
decisions were dropped (a slow consumer) or missed (connected late).

Each decision says how old it is: ``origin_ns`` is when the pipeline's source obtained the
deciding events and ``e2e_latency_ns`` the time from then to publication (ns, host
``CLOCK_REALTIME``). This consumer also measures the age on its own clock when a decision
arrives, ``time.time_ns() - origin_ns``: at least ``e2e_latency_ns`` on the pipeline's host or on
one whose clock is synchronised with it. A robot drops decisions older than its deadline.

    python examples/decision_consumer.py tcp://127.0.0.1:5560
    python examples/decision_consumer.py tcp://127.0.0.1:5560 --json --count 10
    python examples/decision_consumer.py tcp://HOST:5560 --server-key keys/sink --client-key keys/robot

A sink secured with CURVE (``curve_server``, ``curve_clients``) takes only consumers whose public
certificate it lists: give the sink's public certificate (``--server-key keys/sink`` reads
``keys/sink.key``) and this consumer's pair (``--client-key keys/robot`` reads
``keys/robot.key_secret``), as written by ``evpipe keys``. Without them, or with a pair the sink
does not list, nothing arrives.

In a ROS 2 node, run ``receive`` in a thread (or poll the socket from a timer with
``zmq.NOBLOCK``) and publish a message built from the fields you need from ``handle``. A record
with ``class`` null is an abstention: something was seen, no class named (see ``reason``).
"""

import argparse
import json
import sys
import time

import zmq
import zmq.auth

# Fields every decision carries (docs/decisions.md): checked so a mismatch is reported, not guessed.
REQUIRED = ("stream", "segment", "class", "class_name", "score", "margin", "rule", "t", "t_start",
            "events", "decoder_ns", "label", "origin_ns", "e2e_latency_ns", "seq", "published_ns")


def secure(sock, server_key, client_key):
    """Make ``sock`` a CURVE client of the sink whose public certificate is ``server_key``.key,
    with the pair ``client_key``.key_secret (ValueError naming a file that cannot be used)."""
    try:
        server_public, _ = zmq.auth.load_certificate(server_key + ".key")
        public, secret = zmq.auth.load_certificate(client_key + ".key_secret")
    except (OSError, ValueError) as exc:
        raise ValueError(f"not a readable ZeroMQ certificate: {exc}") from None
    if not secret:
        raise ValueError(f"{client_key}.key_secret holds no secret key")
    sock.curve_serverkey = server_public
    sock.curve_publickey, sock.curve_secretkey = public, secret


def receive(address, topic="decisions", count=0, timeout_s=0.0, idle_s=0.0, server_key="",
            client_key=""):
    """Yield (decision dict, host time of its arrival in ns) from ``address``; the time is taken
    right after the message was read. Stop after ``count`` (0: never), after
    ``timeout_s`` in total or ``idle_s`` without a message (0: no limit). Malformed messages are
    reported on stderr and skipped. ``server_key`` and ``client_key``: certificate base paths
    for a sink secured with CURVE (both or neither)."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 10000)
    if server_key or client_key:
        try:
            secure(sock, server_key, client_key)
        except ValueError:
            sock.close(linger=0)
            raise
    sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(address)
    start = last = time.monotonic()
    received = 0
    try:
        while not count or received < count:
            now = time.monotonic()
            limits = [timeout_s - (now - start) if timeout_s else None,
                      idle_s - (now - last) if idle_s else None]
            limits = [x for x in limits if x is not None]
            if limits and min(limits) <= 0:
                return
            if not sock.poll(int(min(limits + [0.2]) * 1000), zmq.POLLIN):
                continue
            frames = sock.recv_multipart()
            received_ns = time.time_ns()
            last = time.monotonic()
            try:
                if len(frames) != 2:
                    raise ValueError(f"expected 2 frames, got {len(frames)}")
                decision = json.loads(frames[1])
                missing = [key for key in REQUIRED if key not in decision]
                if missing:
                    raise ValueError(f"missing fields {missing}")
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                print(f"skipping malformed message: {exc}", file=sys.stderr)
                continue
            received += 1
            yield decision, received_ns
    finally:
        sock.close(linger=0)


def ms(ns):
    return "unknown" if ns is None else f"{ns / 1e6:.1f} ms"


def handle(decision, received_ns):
    """One readable line; replace with what your robot does with a decision. The latency is
    shown twice: the record's (source to publication, measured by the pipeline) and the age on
    arrival here (source to this consumer, on this host's clock)."""
    truth = "" if decision["label"] is None else f" (true {decision['label']})"
    if decision["class"] is None:
        what = f"no decision ({decision.get('reason')})"
    else:
        what = f"{decision['class_name']} by {decision['rule']}, margin {decision['margin']:.3g}"
    age = received_ns - decision["origin_ns"] if decision["origin_ns"] else None
    return (f"#{decision['seq']} [{decision['stream']}] segment {decision['segment']}: {what}{truth}, "
            f"{decision['events']} events, t = {decision['t'] / 1e6:.3f} s; "
            f"e2e {ms(decision['e2e_latency_ns'])} at publication, {ms(age)} on arrival here")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", default="tcp://127.0.0.1:5560")
    parser.add_argument("--topic", default="decisions", help="topic prefix to subscribe to")
    parser.add_argument("--count", type=int, default=0, help="exit after this many decisions")
    parser.add_argument("--timeout", type=float, default=0.0, help="exit after this many seconds")
    parser.add_argument("--idle", type=float, default=0.0, help="exit after this many seconds without a decision")
    parser.add_argument("--json", action="store_true", help="print each decision as one JSON line")
    parser.add_argument("--server-key", default="", help="CURVE: base path of the sink's public "
                                                         "certificate (reads PATH.key)")
    parser.add_argument("--client-key", default="", help="CURVE: base path of this consumer's "
                                                         "certificate pair (reads PATH.key_secret)")
    args = parser.parse_args(argv)
    if bool(args.server_key) != bool(args.client_key):
        parser.error("--server-key and --client-key go together")
    print(f"listening on {args.address}, topic {args.topic!r}", file=sys.stderr, flush=True)
    expected = None
    try:
        for decision, received_ns in receive(args.address, args.topic, args.count, args.timeout,
                                             args.idle, args.server_key, args.client_key):
            if expected is not None and decision["seq"] != expected:
                print(f"missed {decision['seq'] - expected} decision(s)", file=sys.stderr, flush=True)
            expected = decision["seq"] + 1
            print(json.dumps(decision) if args.json else handle(decision, received_ns), flush=True)
    except KeyboardInterrupt:
        pass
    except ValueError as exc:  # a certificate that cannot be used
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
