"""The fixed cost per packet: what a stage and a link cost when a packet holds next to nothing.

Small packets (1 ms of a sparse camera: a few events) must not starve a live graph, so what a
packet costs regardless of its events is measured on its own:

- per stage: each stage of the default graph (``config.toml``: denoise, hots, snn, decoder), built
  and warmed up as the runtime does, is fed in-process one segment of packets of 0 and of 3 events
  (1 ms apart, random pixels), each stage the packets its upstream returned (as ``run_chain``
  does); ours is the median time of one ``process`` call, in us (``cpu_us``: the median of the
  thread's CPU time, steadier on a loaded machine). No program does this work to
  compare with, so the row states the target (10 us per packet) as its ``peer``, with ratio =
  target / ours (higher is better, at least 1 meets it);
- per link: one small packet (3 events) sent by ``links.Sender`` and received by
  ``links.Receiver`` (encode with its JSON header, send, receive, validate, decode, sequence
  tracking), one after the other in one thread, over inproc (the threads runner's transport,
  which costs next to nothing itself) and ipc (the processes runner's), against raw pyzmq sending
  the same three frames on the same transport in the same run; best median of alternating
  rounds. The ratio is ours / raw (lower is better, no target); the extra cost ours - raw is the
  link's fixed cost per packet, stated against its target (25 us) as the stage rows do. Over ipc
  both sides wait for ZeroMQ's I/O thread, whose wake-ups vary by tens of us between runs, so
  the inproc row is the one that isolates our code.
"""

from __future__ import annotations

import pathlib
import tempfile
import time

import numpy as np
import zmq

from bench.common import record
from pipeline.core.events import EVENT_DTYPE
from pipeline.core.packet import Segment, events_packet
from pipeline.runtime.config import load
from pipeline.runtime.links import LOSSLESS, Receiver, Sender
from pipeline.runtime.worker import build_node, freeze_heap

ROOT = pathlib.Path(__file__).resolve().parent.parent
STAGES = ("denoise", "hots", "snn", "decoder")
PACKETS = 2000  # per size and stage
SIZES = (0, 3)  # events per packet
STAGE_TARGET_US = 10.0
LINK_TARGET_US = 25.0
LINK_PACKETS = 5000
TRANSPORTS = ("inproc", "ipc")  # the threads and the processes runner's links
ROUNDS = 5


def tiny_packets(n_events: int, count: int, width: int, height: int) -> list:
    """One segment of ``count`` packets of ``n_events`` events, 1 ms apart, random pixels."""
    rng = np.random.default_rng(0)
    packets = []
    for i in range(count):
        events = np.zeros(n_events, EVENT_DTYPE)
        events["t"] = i * 1000 + np.arange(n_events)
        events["x"] = rng.integers(0, width, n_events)
        events["y"] = rng.integers(0, height, n_events)
        events["p"] = rng.integers(0, 2, n_events)
        segment = Segment(0, start=i == 0, end=i == count - 1, label="0")
        packets.append(events_packet("replay", i, events, width, height, segment))
    return packets


def stage_costs(n_events: int) -> dict[str, tuple[float, float]]:
    """Median us of one ``process`` call per default stage, on packets of ``n_events`` events:
    (wall time, the thread's CPU time)."""
    config = load(ROOT / "config.toml")
    stages = [build_node(config.nodes[name]) for name in STAGES]
    for stage in stages:
        stage.warm_up()
    snn = stages[STAGES.index("snn")]
    width, height = snn.model.width, snn.model.height  # the model's input: N-MNIST, 34 x 34
    packets = tiny_packets(n_events, PACKETS, width, height)
    freeze_heap()
    costs = {}
    for name, stage in zip(STAGES, stages):
        times, cpu, out = [], [], []
        for packet in packets:
            start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
            result = stage.process(packet)
            cpu.append(time.thread_time_ns() - start_cpu)
            times.append(time.perf_counter_ns() - start)
            out.extend(result)
        costs[name] = float(np.median(times)) / 1e3, float(np.median(cpu)) / 1e3
        packets = out
    for stage in stages:
        stage.close()
    return costs


def link_round(kind: str, ctx: zmq.Context, address: str, packet) -> float:
    """Median us of one small packet sent and received over ``address`` (ours or raw)."""
    times = []
    if kind == "ours":
        sender = Sender(ctx, address, LOSSLESS, 64)
        receiver = Receiver(ctx, address, LOSSLESS, 64)
        send, receive = sender.send, receiver.receive
        sockets = (sender, receiver)
        item = packet
    else:
        push, pull = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
        push.bind(address)
        pull.connect(address)
        frames = [b"bench", b'{"v":1}', memoryview(packet.records).cast("B")]

        def send(item):
            push.send_multipart(item, copy=True)

        def receive():
            return pull.recv_multipart(copy=False)
        sockets = (push, pull)
        item = frames
    for _ in range(200):  # connect and warm up
        send(item)
        receive()
    for _ in range(LINK_PACKETS):
        start = time.perf_counter_ns()
        send(item)
        receive()
        times.append(time.perf_counter_ns() - start)
    for sock in sockets:
        sock.close()
    return float(np.median(times)) / 1e3


def link_costs(transport: str) -> tuple[float, float]:
    """Best (over alternating rounds) median us per small packet over ``transport`` (inproc or
    ipc): ours, raw pyzmq."""
    packet = tiny_packets(3, 1, 34, 34)[0]
    ctx = zmq.Context()
    freeze_heap()
    ours, raw = [], []
    with tempfile.TemporaryDirectory() as folder:
        base = f"ipc://{folder}/" if transport == "ipc" else "inproc://bench-packets-"
        for r in range(ROUNDS):
            ours.append(link_round("ours", ctx, f"{base}ours{r}", packet))
            raw.append(link_round("raw", ctx, f"{base}raw{r}", packet))
    ctx.term()
    return min(ours), min(raw)


def run() -> list[dict]:
    out = []
    for n in SIZES:
        for name, (us, cpu_us) in stage_costs(n).items():
            out.append({**record(f"packets: {name} per {n}-event packet, target 10 us as peer",
                                 us, STAGE_TARGET_US, "us", 1.0, ratio=STAGE_TARGET_US / us),
                        "cpu_us": cpu_us})
    for transport in TRANSPORTS:
        ours, raw = link_costs(transport)
        out.append(record(f"packets: link send+receive, 3 events, {transport}, vs raw pyzmq", ours,
                          raw, "us", None))
        extra = ours - raw
        out.append(record(f"packets: link fixed cost (ours - raw), {transport}, target 25 us as peer",
                          extra, LINK_TARGET_US, "us", 1.0, ratio=LINK_TARGET_US / max(extra, 1e-3)))
    return out


if __name__ == "__main__":
    for row in run():
        print(row)
