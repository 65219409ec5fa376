"""Per-node metrics: counters, rates and latency percentiles, reported once a second as JSON.

Each running node connects a PUSH socket to the graph's metrics collector and sends a snapshot
every ``interval_s`` (never blocking: a snapshot that finds the queue full is dropped and
counted), and a last one marked ``final`` when it stops. The collector keeps the newest snapshot
per node, republishes them on a PUB socket for ``evpipe top`` and prints the end summary.

The PUB socket binds ``[graph] metrics_address``, by default ``metrics_address(graph)``: an ipc
socket in the temp folder named after the graph, so graphs with different names never share one.
Messages on it: ``[b"metrics", snapshot JSON]`` per node per interval, and once, when the whole
graph has ended, ``[b"graph", {"graph": name, "ok": bool}]`` (ok: every node ended without error).

Snapshot keys: node, kind, final, error, elapsed_s, records_in, packets_in, records_out,
packets_out, unit_in, unit_out (what the records are: the record dtype name of the packets,
"events", "features", "spikes", ...; "JSON records" for JSON payloads; "records" when a node saw
several kinds; "" before its first packet), dropped (live sends refused), gaps (packets lost
upstream, from sequence numbers), duplicates (packets received twice on exactly-once links and
dropped), resent (packets sent again to a restarted receiver), overflow (packets the resend
buffer let go), silences (times a peer went unheard for its link's ``peer_timeout_s``),
restarts (times the orchestrator restarted the node's worker process; counts start again
with each process), counters (the node's own counts, ``Stage.counters``), malformed ({reason: count}), records_in_per_s,
records_out_per_s, packets_in_per_s, packets_out_per_s (over the last interval), busy_s (time
inside process), max_drained (the longest run of input messages read back to back before the
input ran dry, over the last interval: each was already queued when read, so an input that keeps up
shows 1 and a growing run means the node is behind; ZeroMQ exposes no queue length),
latency_p50_us / latency_p99_us (host arrival of a packet to emission of its results),
transit_p50_us / transit_p99_us (sender's send time to host arrival, across the link; one
sample per message, as a batch's packets share its send time) and
e2e_p50_us / e2e_p99_us (end to end: from the moment the source obtained a packet's events, its
``origin_ns``, to the moment this node was done with it, its results sent; for a sink, the
packet delivered: a decision published or written). Percentiles are over the last ``SAMPLES``
packets, None before the first (e2e: the first with a known origin; sources have none).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections import Counter, deque

import numpy as np
import zmq

from pipeline.core.events import JSON_DTYPE_NAME

SAMPLES = 4096  # latency samples kept per node (a bounded ring)
SNAPSHOT_TOPIC = b"metrics"  # one node's snapshot
END_TOPIC = b"graph"  # the whole graph has ended


def metrics_address(graph) -> str:
    """Where a graph publishes its metrics: ``graph.metrics_address`` when set, else
    ``ipc://<temp folder>/evpipe-<graph name>-metrics.sock`` (name characters other than letters,
    digits, ``.``, ``_`` and ``-`` become ``_``)."""
    if graph.metrics_address:
        return graph.metrics_address
    name = re.sub(r"[^A-Za-z0-9._-]", "_", graph.name)
    return f"ipc://{os.path.join(tempfile.gettempdir(), f'evpipe-{name}-metrics.sock')}"


def unit(dtype_names: set[str]) -> str:
    """What a count of records from packets with these record dtype names counts."""
    if len(dtype_names) > 1:
        return "records"
    name = next(iter(dtype_names), "")
    return "JSON records" if name == JSON_DTYPE_NAME else name


def _percentiles(samples: deque) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    p50, p99 = np.percentile(np.fromiter(samples, dtype=np.int64), [50, 99]) / 1e3
    return round(float(p50), 1), round(float(p99), 1)


class NodeMetrics:
    """Counters of one running node; ``snapshot`` turns them into a JSON-ready dict."""

    def __init__(self, node: str, kind: str):
        self.node, self.kind = node, kind
        self.start()
        self.records_out = self.packets_out = 0
        self.busy_ns = 0
        self.max_drained = 0  # most messages read back to back in one poll, this interval
        self.dtypes_in: set[str] = set()  # record dtype names of the packets received
        self.dtypes_out: set[str] = set()  # and of those emitted
        self.error: str | None = None
        self.latency_ns: deque = deque(maxlen=SAMPLES)
        self.transit_ns: deque = deque(maxlen=SAMPLES)
        self.e2e_ns: deque = deque(maxlen=SAMPLES)  # origin of a packet's events to done with it

    def start(self) -> None:
        """Start the clock of the rates: when the node is ready and its links are open."""
        self.started = time.monotonic()
        self._last = (self.started, 0, 0, 0, 0)

    def snapshot(self, received, sent, final: bool = False, counters=None) -> dict:
        """The counters now; ``received``: the ``ReceiveStats`` of every input, ``sent``: the
        ``SendStats`` of every socket output (``pipeline.runtime.links``)."""
        now = time.monotonic()
        records_in = sum(stats.events for stats in received)
        packets_in = sum(stats.packets for stats in received)
        malformed = Counter()
        for stats in received:
            malformed.update(stats.malformed)
        last_time, last_ri, last_ro, last_pi, last_po = self._last
        span = max(now - last_time, 1e-9)
        self._last = (now, records_in, self.records_out, packets_in, self.packets_out)
        latency = _percentiles(self.latency_ns)
        transit = _percentiles(self.transit_ns)
        e2e = _percentiles(self.e2e_ns)
        max_drained, self.max_drained = self.max_drained, 0
        return {
            "node": self.node, "kind": self.kind, "final": final, "error": self.error,
            "time_ns": time.time_ns(), "elapsed_s": round(now - self.started, 3),
            "records_in": records_in, "packets_in": packets_in,
            "records_out": self.records_out, "packets_out": self.packets_out,
            "unit_in": unit(self.dtypes_in), "unit_out": unit(self.dtypes_out),
            "dropped": sum(stats.dropped for stats in sent),
            "gaps": sum(stats.gaps for stats in received),
            "duplicates": sum(stats.duplicates for stats in received),
            "resent": sum(stats.resent for stats in sent),
            "overflow": sum(stats.overflow for stats in sent),
            "silences": sum(stats.silences for stats in received) + sum(stats.silences for stats in sent),
            "restarts": 0, "counters": dict(counters or {}),
            "malformed": dict(malformed),
            "records_in_per_s": round((records_in - last_ri) / span, 1),
            "records_out_per_s": round((self.records_out - last_ro) / span, 1),
            "packets_in_per_s": round((packets_in - last_pi) / span, 1),
            "packets_out_per_s": round((self.packets_out - last_po) / span, 1),
            "busy_s": round(self.busy_ns / 1e9, 6), "max_drained": max_drained,
            "latency_p50_us": latency[0], "latency_p99_us": latency[1],
            "transit_p50_us": transit[0], "transit_p99_us": transit[1],
            "e2e_p50_us": e2e[0], "e2e_p99_us": e2e[1],
        }


def counted(snap: dict) -> tuple[str, str]:
    """Which side of a node its rates describe, and in what unit: what a source emits, what
    the other nodes receive. Returns ("in" or "out", unit)."""
    side = "out" if snap["kind"] == "source" else "in"
    return side, snap[f"unit_{side}"] or "records"


def rate_text(snap: dict, per_s: float) -> str:
    """A rate of ``snap``'s counted records with its unit, e.g. ``"190,012 events/s"``."""
    return f"{per_s:,.0f} {counted(snap)[1]}/s"


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


def ms_text(value_us: float | None) -> str:
    """A latency percentile of a snapshot (us) in ms with one decimal; "-" when there is none."""
    return "-" if value_us is None else f"{value_us / 1e3:,.1f}"


def summary_table(snapshots: list[dict]) -> str:
    """The end-of-run table: one row per node with record totals, the packets it dropped (live
    sends refused) and missed (lost before it reached them, from sequence numbers: the same
    packet shows as dropped at its sender and missed at its receiver), the average rate of what it
    counts (``counted``) over its run, with that unit, its p99 latency (us) and the p50 and p99
    of the end-to-end latency of the packets it was done with (ms; for a sink, delivered)."""
    header = f"{'node':<16} {'kind':<6} {'records in':>11} {'records out':>11} {'packets':>9} " \
             f"{'dropped':>7} {'missed':>7} {'malformed':>9} {'rate':>24} {'p99 us':>9} " \
             f"{'e2e p50 ms':>10} {'e2e p99 ms':>10}"
    rows = [header, "-" * len(header)]
    for snap in snapshots:
        side = counted(snap)[0]
        packets = snap[f"packets_{side}"]
        rate = snap[f"records_{side}"] / snap["elapsed_s"] if snap["elapsed_s"] else 0.0
        p99 = snap["latency_p99_us"]
        rows.append(
            f"{snap['node']:<16} {snap['kind']:<6} {snap['records_in']:>11,} {snap['records_out']:>11,} "
            f"{packets:>9,} {snap['dropped']:>7,} {snap['gaps']:>7,} "
            f"{sum(snap['malformed'].values()):>9,} "
            f"{rate_text(snap, rate):>24} {'-' if p99 is None else f'{p99:.0f}':>9} "
            f"{ms_text(snap.get('e2e_p50_us')):>10} {ms_text(snap.get('e2e_p99_us')):>10}"
            + "".join(f"  {name} {count:,}" for name, count in snap.get("counters", {}).items()
                      if count)
            + (f"  restarted {snap['restarts']}x" if snap.get("restarts") else "")
            + (f"  ERROR: {snap['error']}" if snap.get("error") else ""))
    return "\n".join(rows)
