"""Per-node metrics: counters, rates and latency percentiles, reported once a second as JSON.

Each running node connects a PUSH socket to the graph's metrics collector and sends a snapshot
every ``interval_s`` (never blocking: a snapshot that finds the queue full is dropped and
counted), and a last one marked ``final`` when it stops. The collector keeps the newest snapshot
per node, republishes them on a PUB socket for ``evpipe top`` and prints the end summary.

Snapshot keys: node, kind, final, error, elapsed_s, events_in, packets_in, events_out,
packets_out, dropped (live sends refused), gaps (packets lost upstream, from sequence numbers),
malformed ({reason: count}), events_in_per_s, events_out_per_s, packets_in_per_s,
packets_out_per_s (over the last interval), busy_s (time inside process), backlog (messages
read back to back without waiting: a lower bound of the input queue depth), latency_p50_us /
latency_p99_us (host arrival of a packet to emission of its results) and transit_p50_us /
transit_p99_us (sender's send time to host arrival, across the link).
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque

import numpy as np
import zmq

SAMPLES = 4096  # latency samples kept per node (a bounded ring)


def _percentiles(samples: deque) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    p50, p99 = np.percentile(np.fromiter(samples, dtype=np.int64), [50, 99]) / 1e3
    return round(float(p50), 1), round(float(p99), 1)


class NodeMetrics:
    """Counters of one running node; ``snapshot`` turns them into a JSON-ready dict."""

    def __init__(self, node: str, kind: str):
        self.node, self.kind = node, kind
        self.started = time.monotonic()
        self.events_out = self.packets_out = 0
        self.busy_ns = 0
        self.backlog = 0
        self.error: str | None = None
        self.latency_ns: deque = deque(maxlen=SAMPLES)
        self.transit_ns: deque = deque(maxlen=SAMPLES)
        self._last = (self.started, 0, 0, 0, 0)

    def snapshot(self, receivers, senders, final: bool = False) -> dict:
        now = time.monotonic()
        events_in = sum(r.stats.events for r in receivers)
        packets_in = sum(r.stats.packets for r in receivers)
        malformed = Counter()
        for r in receivers:
            malformed.update(r.stats.malformed)
        last_time, last_ei, last_eo, last_pi, last_po = self._last
        span = max(now - last_time, 1e-9)
        self._last = (now, events_in, self.events_out, packets_in, self.packets_out)
        latency = _percentiles(self.latency_ns)
        transit = _percentiles(self.transit_ns)
        return {
            "node": self.node, "kind": self.kind, "final": final, "error": self.error,
            "time_ns": time.time_ns(), "elapsed_s": round(now - self.started, 3),
            "events_in": events_in, "packets_in": packets_in,
            "events_out": self.events_out, "packets_out": self.packets_out,
            "dropped": sum(s.stats.dropped for s in senders),
            "gaps": sum(r.stats.gaps for r in receivers),
            "malformed": dict(malformed),
            "events_in_per_s": round((events_in - last_ei) / span, 1),
            "events_out_per_s": round((self.events_out - last_eo) / span, 1),
            "packets_in_per_s": round((packets_in - last_pi) / span, 1),
            "packets_out_per_s": round((self.packets_out - last_po) / span, 1),
            "busy_s": round(self.busy_ns / 1e9, 6), "backlog": self.backlog,
            "latency_p50_us": latency[0], "latency_p99_us": latency[1],
            "transit_p50_us": transit[0], "transit_p99_us": transit[1],
        }


class MetricsReporter:
    """Sends a node's snapshots to the collector address (PUSH, bounded, never blocking)."""

    def __init__(self, ctx: zmq.Context, address: str, interval_s: float):
        self.interval_s = interval_s
        self.sock = None
        self.unsent = 0
        if address:
            self.sock = ctx.socket(zmq.PUSH)
            self.sock.setsockopt(zmq.SNDHWM, 16)
            self.sock.setsockopt(zmq.LINGER, 1000)
            self.sock.connect(address)
        self._due = time.monotonic() + interval_s

    def due(self) -> bool:
        return time.monotonic() >= self._due

    def send(self, snapshot: dict, final: bool = False) -> None:
        self._due = time.monotonic() + self.interval_s
        if self.sock is None:
            return
        payload = json.dumps(snapshot).encode()
        try:
            if final:  # wait up to a second for room: the summary depends on it
                if self.sock.poll(1000, zmq.POLLOUT):
                    self.sock.send(payload, zmq.NOBLOCK)
                else:
                    self.unsent += 1
            else:
                self.sock.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self.unsent += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def summary_table(snapshots: list[dict]) -> str:
    """The end-of-run table: one row per node with totals and average events/s."""
    header = f"{'node':<16} {'kind':<6} {'events in':>11} {'events out':>11} {'packets':>9} " \
             f"{'drops':>7} {'malformed':>9} {'events/s':>12} {'p99 us':>9}"
    rows = [header, "-" * len(header)]
    for snap in snapshots:
        events = snap["events_in"] if snap["kind"] != "source" else snap["events_out"]
        packets = snap["packets_in"] if snap["kind"] != "source" else snap["packets_out"]
        rate = events / snap["elapsed_s"] if snap["elapsed_s"] else 0.0
        p99 = snap["latency_p99_us"]
        rows.append(
            f"{snap['node']:<16} {snap['kind']:<6} {snap['events_in']:>11,} {snap['events_out']:>11,} "
            f"{packets:>9,} {snap['dropped'] + snap['gaps']:>7,} {sum(snap['malformed'].values()):>9,} "
            f"{rate:>12,.0f} {'-' if p99 is None else f'{p99:.0f}':>9}"
            + (f"  ERROR: {snap['error']}" if snap.get("error") else ""))
    return "\n".join(rows)
