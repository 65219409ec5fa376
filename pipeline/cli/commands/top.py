"""`evpipe top [ADDRESS]`: a live table of per-node metrics from a running graph.

Reads the orchestrator's metrics PUB socket (``[graph] metrics_address``): two-frame messages
``[b"metrics", JSON snapshot]``, one snapshot per node per second (keys: ``pipeline.runtime.metrics``).
A message that is not such a snapshot is counted and shown under the table, never fatal.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import zmq

from pipeline.runtime.config import ConfigError, load

NAME = "top"
HELP = "live table of per-stage metrics (events/s, packets/s, drops, queue depth, latency)"

log = logging.getLogger("evpipe")
TOPIC = b"metrics"
NEEDED = {"node": str, "kind": str, "events_in_per_s": (int, float), "events_out_per_s": (int, float),
          "packets_in_per_s": (int, float), "packets_out_per_s": (int, float),
          "dropped": int, "gaps": int, "backlog": int}

# (heading, width, function of a snapshot giving the cell text)
COLUMNS = (
    ("node", -16, lambda s: s["node"]),
    ("kind", -6, lambda s: s["kind"]),
    ("events/s", 12, lambda s: f"{_rate(s, 'events'):,.0f}"),
    ("packets/s", 10, lambda s: f"{_rate(s, 'packets'):,.0f}"),
    ("drops", 8, lambda s: f"{s['dropped'] + s['gaps']:,}"),
    ("malformed", 9, lambda s: f"{sum(s.get('malformed', {}).values()):,}"),
    ("queue", 6, lambda s: f"{s['backlog']:,}"),
    ("p50 us", 9, lambda s: _number(s.get("latency_p50_us"))),
    ("p99 us", 9, lambda s: _number(s.get("latency_p99_us"))),
    ("state", -8, lambda s: "ERROR" if s.get("error") else ("ended" if s.get("final") else "running")),
)


def _rate(snap: dict, what: str) -> float:
    """Events or packets per second through a node: what sources emit, what the others receive."""
    return snap[f"{what}_out_per_s" if snap["kind"] == "source" else f"{what}_in_per_s"]


def _number(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def parse(frames: list[bytes]) -> dict:
    """A snapshot from a metrics message; ValueError says what is wrong with it."""
    if len(frames) != 2 or frames[0] != TOPIC:
        raise ValueError(f"expected 2 frames [b'metrics', JSON], got {len(frames)} frame(s)")
    try:
        snap = json.loads(frames[1])
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"snapshot is not JSON ({exc})") from None
    if not isinstance(snap, dict):
        raise ValueError("snapshot is not a JSON object")
    for key, kind in NEEDED.items():
        if not isinstance(snap.get(key), kind) or isinstance(snap.get(key), bool):
            raise ValueError(f"snapshot field {key!r} missing or not {getattr(kind, '__name__', 'a number')}")
    return snap


def table(snapshots: dict[str, dict], malformed: int = 0, last_problem: str = "") -> str:
    """The table, one row per node in order of first appearance."""
    def cell(text, width):
        return f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"

    rows = [" ".join(cell(name, width) for name, width, _ in COLUMNS)]
    rows.append("-" * len(rows[0]))
    for snap in snapshots.values():
        row = " ".join(cell(fn(snap), width) for _, width, fn in COLUMNS)
        rows.append(row + (f"  {snap['error']}" if snap.get("error") else ""))
    if malformed:
        rows.append(f"({malformed} malformed metrics message(s) ignored; last: {last_problem})")
    return "\n".join(rows)


def add_arguments(parser) -> None:
    parser.add_argument("address", nargs="?", default="",
                        help="metrics address (default: [graph] metrics_address of --config)")
    parser.add_argument("-c", "--config", default="config.toml", help="config to take the address from")
    parser.add_argument("--once", action="store_true", help="print one table and exit")
    parser.add_argument("--count", type=int, default=0, help="print this many tables and exit")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between tables")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="give up when no metrics arrive for this long (s; 0: wait forever)")


def _address(args) -> str:
    if args.address:
        return args.address
    try:
        address = load(args.config).graph.metrics_address
    except ConfigError as exc:
        raise ValueError(f"no address given, and {exc}") from None
    if not address:
        raise ValueError(f"no address given, and {args.config} sets no [graph] metrics_address")
    return address


def main(args) -> int:
    try:
        address = _address(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    tables = 1 if args.once else args.count
    live = sys.stdout.isatty() and tables != 1
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, TOPIC)
    sock.setsockopt(zmq.RCVHWM, 1000)
    snapshots: dict[str, dict] = {}
    malformed, problem, printed = 0, "", 0
    try:
        sock.connect(address)
        last_message = time.monotonic()
        due = None  # when the next table is printed: one interval after the first snapshot
        while not tables or printed < tables:
            if sock.poll(100, zmq.POLLIN):
                frames = sock.recv_multipart()
                last_message = time.monotonic()
                try:
                    snap = parse(frames)
                except ValueError as exc:
                    malformed, problem = malformed + 1, str(exc)
                    continue
                snapshots[snap["node"]] = snap
                due = due or time.monotonic() + args.interval
            elif args.timeout and time.monotonic() - last_message > args.timeout:
                log.error("no metrics from %s for %.0f s: is a graph running with "
                          "[graph] metrics_address = %r?", address, args.timeout, address)
                return 1
            if due is not None and time.monotonic() >= due:
                text = table(snapshots, malformed, problem)
                print(("\x1b[H\x1b[2J" if live else "") + text + ("" if live else "\n"), flush=True)
                printed += 1
                due += args.interval
    except zmq.ZMQError as exc:
        log.error("cannot read metrics from %s: %s", address, exc)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()
    return 0
