"""A live link with a deliberately slow consumer: bounded memory, every drop accounted for."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import zmq

from pipeline.core.events import EVENT_DTYPE
from pipeline.core.packet import eos_packet, events_packet
from pipeline.runtime.links import LIVE, Receiver, Sender
from tests.pipeline.helpers import free_port

PACKETS = 2000
EVENTS = 10_000  # 160 kB per packet: 320 MB if the link queued everything


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_slow_consumer_drops_are_counted_and_memory_stays_bounded():
    address = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    sender = Sender(ctx, address, LIVE, hwm=8)
    receiver = Receiver(ctx, address, LIVE, hwm=8)
    assert sender.wait_for_subscriber(5.0)
    baseline = rss_bytes()
    peak = [baseline]
    received = []

    def consume():
        while True:
            packet = receiver.receive(timeout_ms=10_000)
            assert packet is not None, "end of stream never arrived"
            if packet.is_eos:
                return
            received.append(packet.header.seq)
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)  # a consumer far slower than the sender

    thread = threading.Thread(target=consume)
    thread.start()
    accepted = 0
    for seq in range(PACKETS):
        events = np.zeros(EVENTS, EVENT_DTYPE)  # fresh buffer each time, like a camera
        events["t"] = np.arange(EVENTS) + seq * EVENTS
        accepted += sender.send(events_packet("cam", seq, events, 320, 240))
        peak[0] = max(peak[0], rss_bytes())
    sender.send(eos_packet("cam", PACKETS))
    thread.join(30)
    assert not thread.is_alive()

    assert sender.stats.dropped == PACKETS - accepted > 0
    assert len(received) < PACKETS // 2
    assert received == sorted(received)
    # every loss, at the sender or in the receiving queue, shows as a sequence gap
    assert receiver.stats.gaps == PACKETS - len(received)
    assert receiver.stats.packets == len(received)
    assert peak[0] - baseline < 100 * 2**20, f"memory grew by {(peak[0] - baseline) / 2**20:.0f} MiB"
    sender.close()
    receiver.close()
    ctx.term()
