"""`evpipe top [CONFIG | ADDRESS]`: a live table of per-node metrics from a running graph.

Reads the orchestrator's metrics PUB socket (``pipeline.runtime.metrics``): the address given,
or the one the config's graph publishes on (``[graph] metrics_address``, by default an ipc socket
named after the graph). Two-frame messages: ``[b"metrics", JSON snapshot]``, one snapshot per
node per interval, and ``[b"graph", {"graph": name, "ok": bool}]`` when the graph has ended; top
then prints the last table and exits 0 if the graph ended cleanly, 1 if it failed. A message that
is neither is counted and shown under the table, never fatal.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import zmq

from pipeline.runtime.config import ConfigError, load
from pipeline.runtime.links import endpoint_problem
from pipeline.runtime.metrics import (
    END_TOPIC,
    SNAPSHOT_TOPIC,
    counted,
    metrics_address,
    ms_text,
    rate_text,
)

NAME = "top"
HELP = ("live table of per-node metrics (records/s by kind, packets/s, packets dropped and missed, "
        "restarts, latency, end-to-end latency)")

log = logging.getLogger("evpipe")
NUMBER = (int, float)
NEEDED = {"node": str, "kind": str, "records_in_per_s": NUMBER, "records_out_per_s": NUMBER,
          "packets_in_per_s": NUMBER, "packets_out_per_s": NUMBER, "unit_in": str, "unit_out": str,
          "dropped": int, "gaps": int, "max_drained": int}

# (heading, width, function of a snapshot giving the cell text); negative width: left-aligned
COLUMNS = (
    ("node", -16, lambda s: s["node"]),
    ("kind", -6, lambda s: s["kind"]),
    ("rate", 22, lambda s: rate_text(s, _per_s(s, "records"))),
    ("packets/s", 10, lambda s: f"{_per_s(s, 'packets'):,.0f}"),
    ("dropped", 8, lambda s: f"{s['dropped']:,}"),
    ("missed", 7, lambda s: f"{s['gaps']:,}"),
    ("malformed", 9, lambda s: f"{sum(s.get('malformed', {}).values()):,}"),
    ("drained", 7, lambda s: f"{s['max_drained']:,}"),
    ("restarts", 8, lambda s: f"{s.get('restarts', 0):,}"),
    ("p50 us", 9, lambda s: _number(s.get("latency_p50_us"))),
    ("p99 us", 9, lambda s: _number(s.get("latency_p99_us"))),
    ("e2e p50 ms", 10, lambda s: ms_text(s.get("e2e_p50_us"))),
    ("e2e p99 ms", 10, lambda s: ms_text(s.get("e2e_p99_us"))),
    ("state", -8, lambda s: "ERROR" if s.get("error") else ("ended" if s.get("final") else "running")),
)


def _per_s(snap: dict, what: str) -> float:
    """Records or packets per second through a node, on the side ``counted`` names."""
    return snap[f"{what}_{counted(snap)[0]}_per_s"]


def _number(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _json_object(frame: bytes, what: str) -> dict:
    try:
        value = json.loads(frame)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def parse(frames: list[bytes]) -> tuple[bytes, dict]:
    """(topic, message) of a metrics-socket message: a node snapshot or the graph's end;
    ValueError says what is wrong with it."""
    if len(frames) != 2 or frames[0] not in (SNAPSHOT_TOPIC, END_TOPIC):
        raise ValueError(f"expected 2 frames [b'metrics' or b'graph', JSON], got {len(frames)} frame(s)")
    if frames[0] == END_TOPIC:
        end = _json_object(frames[1], "graph end message")
        if not isinstance(end.get("ok"), bool):
            raise ValueError("graph end message field 'ok' missing or not a boolean")
        return END_TOPIC, end
    snap = _json_object(frames[1], "snapshot")
    for key, kind in NEEDED.items():
        if not isinstance(snap.get(key), kind) or isinstance(snap.get(key), bool):
            raise ValueError(f"snapshot field {key!r} missing or not {getattr(kind, '__name__', 'a number')}")
    return SNAPSHOT_TOPIC, snap


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
    parser.add_argument("target", nargs="?", default="config.toml",
                        help="the graph's config (default: config.toml), or a metrics address "
                             "such as tcp://127.0.0.1:5557 or ipc:///tmp/x.sock")
    parser.add_argument("--once", action="store_true", help="print one table and exit")
    parser.add_argument("--count", type=int, default=0, help="print this many tables and exit")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between tables")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="give up when no metrics arrive for this long (s; 0: wait forever)")


def _address(target: str) -> str:
    """The metrics address ``target`` names: itself if it has a scheme, else its config's."""
    if "://" in target:
        if endpoint_problem(target):
            raise ConfigError(endpoint_problem(target))
        return target
    return metrics_address(load(target).graph)


def main(args) -> int:
    try:
        address = _address(args.target)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    tables = 1 if args.once else args.count
    live = sys.stdout.isatty() and tables != 1
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    for topic in (SNAPSHOT_TOPIC, END_TOPIC):
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.setsockopt(zmq.RCVHWM, 1000)
    snapshots: dict[str, dict] = {}
    malformed, problem, printed = 0, "", 0

    def show() -> None:
        text = table(snapshots, malformed, problem)
        print(("\x1b[H\x1b[2J" if live else "") + text + ("" if live else "\n"), flush=True)

    try:
        sock.connect(address)
        last_message = time.monotonic()
        due = None  # when the next table is printed: one interval after the first snapshot
        while not tables or printed < tables:
            if sock.poll(100, zmq.POLLIN):
                frames = sock.recv_multipart()
                last_message = time.monotonic()
                try:
                    topic, message = parse(frames)
                except ValueError as exc:
                    malformed, problem = malformed + 1, str(exc)
                    continue
                if topic == END_TOPIC:
                    show()
                    if message["ok"]:
                        log.info("graph %r ended cleanly", message.get("graph"))
                        return 0
                    log.error("graph %r failed", message.get("graph"))
                    return 1
                snapshots[message["node"]] = message
                due = due or time.monotonic() + args.interval
            elif args.timeout and time.monotonic() - last_message > args.timeout:
                log.error("no metrics from %s for %.0f s: is the graph running? (it publishes "
                          "on [graph] metrics_address, by default an ipc socket named after "
                          "[graph] name)", address, args.timeout)
                return 1
            if due is not None and time.monotonic() >= due:
                show()
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
