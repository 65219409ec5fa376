"""Links: events/s through one lossless link, and send-to-receive latency.

Throughput: a sender in this process, a receiver in a separate process, over ipc and tcp, for
packets of 1k, 10k and 100k events. Ours is ``pipeline.runtime.links`` as a worker uses it
(packets under 64 KB batched, up to 128 packets or 1 MiB per message, larger ones sent alone;
every received packet validated, sequence tracked); the peer is raw pyzmq sending the same
three frames per packet (same buffers, zero-copy) with no encoding or checks. Rate is measured
at the receiver from the first to the last message; best of ``ROUNDS`` alternating rounds each
(the shared host varies by more than the two sides differ). Target: ours >= 0.8x raw at 10k
events.

Latency: 1000-event packets paced at 1 Mev/s (one per ms) for 2 s over tcp loopback; the
receiver takes host arrival time minus the header's send time (both ``time.time_ns``). Target:
p99 under 2 ms, reported as ratio = 2 ms / p99 (higher is better).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import zmq

from bench.common import record
from pipeline.core.events import EVENT_DTYPE
from pipeline.core.packet import eos_packet, events_packet
from pipeline.runtime.links import LOSSLESS, Receiver, Sender
from pipeline.runtime.worker import freeze_heap

SIZES = (1_000, 10_000, 100_000)
BYTES_PER_RUN = 200 * 2**20  # about this much payload per throughput run
LATENCY_S, LATENCY_BUDGET_MS = 2.0, 2.0
HWM = 64
ROUNDS = 5


def free_tcp() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def events(n: int, seq: int = 0) -> np.ndarray:
    out = np.zeros(n, EVENT_DTYPE)
    out["t"] = np.arange(n) + seq * n
    out["x"] = np.arange(n) % 320
    out["y"] = np.arange(n) % 240
    return out


# receiving side (a separate process) -------------------------------------------------------
def receive(kind: str, address: str, count: int) -> dict:
    freeze_heap()  # as the node runtime does before a node runs (both kinds, to be fair)
    ctx = zmq.Context()
    first = last = 0
    transit = []
    if kind == "ours":
        receiver = Receiver(ctx, address, LOSSLESS, HWM)
        print("ready", flush=True)
        n = 0
        while True:
            packet = receiver.receive()
            if packet is None:
                continue
            now = time.time_ns()
            if packet.is_eos:
                break
            transit.append(now - packet.header.sent_ns)
            first = first or time.perf_counter()
            last = time.perf_counter()
            n += 1
        receiver.close()
    else:
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, HWM)
        sock.connect(address)
        print("ready", flush=True)
        n = 0
        while True:
            frames = sock.recv_multipart(copy=False)
            now = time.time_ns()
            if frames[0].bytes == b"eos":
                break
            transit.append(now - int(frames[1].bytes))
            first = first or time.perf_counter()
            last = time.perf_counter()
            n += 1
        sock.close()
    ctx.term()
    return {"received": n, "seconds": last - first, "transit_ns": transit}


def spawn_receiver(kind: str, address: str, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.bench_links", kind, address, str(count)],
                            stdout=subprocess.PIPE, text=True)


# sending side ----------------------------------------------------------------------------------
def send(kind: str, address: str, packets: list[np.ndarray], pace_s: float = 0.0) -> None:
    freeze_heap()
    ctx = zmq.Context()
    if kind == "ours":
        sender = Sender(ctx, address, LOSSLESS, HWM, batch=not pace_s)  # as a worker sends
        start = time.perf_counter()
        for seq, chunk in enumerate(packets):
            if pace_s:
                while time.perf_counter() < start + seq * pace_s:
                    time.sleep(pace_s / 10)
            sender.send(events_packet("bench", seq, chunk, 320, 240))
        sender.send(eos_packet("bench", len(packets)))
        sender.close()
    else:
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.bind(address)
        start = time.perf_counter()
        for seq, chunk in enumerate(packets):
            if pace_s:
                while time.perf_counter() < start + seq * pace_s:
                    time.sleep(pace_s / 10)
            sock.send_multipart([b"bench", str(time.time_ns()).encode(), memoryview(chunk).cast("B")],
                                copy=False)
        sock.send_multipart([b"eos", b"0", b""])
        time.sleep(0.5)  # raw PUSH has no end-of-stream handshake: let the tail drain
        sock.close()
    ctx.term()


def measure(kind: str, address: str, packets: list[np.ndarray], pace_s: float = 0.0) -> dict:
    proc = spawn_receiver(kind, address, len(packets))
    if proc.stdout.readline().strip() != "ready":  # imported and connected: no start-up backlog
        raise RuntimeError(f"{kind} receiver did not start")
    send(kind, address, packets, pace_s)
    out, _ = proc.communicate(timeout=300)
    result = json.loads(out)
    if result["received"] != len(packets):
        raise RuntimeError(f"{kind} over {address}: {result['received']} of {len(packets)} packets")
    return result


def address_for(transport: str) -> str:
    return free_tcp() if transport == "tcp" else f"ipc:///tmp/evpipe-bench-{time.time_ns()}.sock"


def run() -> list[dict]:
    records = []
    for transport in ("ipc", "tcp"):
        for size in SIZES:
            count = max(200, BYTES_PER_RUN // (size * EVENT_DTYPE.itemsize))
            packets = [events(size, seq % 16) for seq in range(min(count, 16))] * (count // 16)
            rates = {"ours": 0.0, "raw": 0.0}
            for _ in range(ROUNDS):  # alternate, keep the best of each: the machine is shared
                for kind in rates:
                    result = measure(kind, address_for(transport), packets)
                    rates[kind] = max(rates[kind], (len(packets) - 1) * size / result["seconds"])
            target = 0.8 if size == 10_000 else None
            records.append(record(f"lossless link {transport}, {size:,}-event packets vs raw pyzmq",
                                  rates["ours"], rates["raw"], "events/s", target))
    packets = [events(1000, seq) for seq in range(int(LATENCY_S * 1000))]
    p99 = {}
    for kind in ("ours", "raw"):
        transit = np.asarray(measure(kind, free_tcp(), packets, pace_s=1e-3)["transit_ns"]) / 1e6
        p99[kind] = float(np.percentile(transit, 99))
        p50 = float(np.percentile(transit, 50))
        print(f"  latency {kind}: p50 {p50:.3f} ms, p99 {p99[kind]:.3f} ms")
    records.append(record("latency p99 at 1 Mev/s, 1 ms packets, tcp (peer = 2 ms budget)",
                          p99["ours"], LATENCY_BUDGET_MS, "ms", 1.0, ratio=LATENCY_BUDGET_MS / p99["ours"]))
    records.append(record("latency p99 at 1 Mev/s, 1 ms packets, tcp vs raw pyzmq",
                          p99["ours"], p99["raw"], "ms", None, ratio=p99["raw"] / p99["ours"]))
    return records


if __name__ == "__main__":
    print(json.dumps(receive(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
