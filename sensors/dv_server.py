"""DV network output: events served over the DV protocol by dv-processing's ``NetworkWriter``.

The writer lives in a helper process (``serve``) fed through a pipe, for two reasons:
dv-processing 2.0's writer destructor can deadlock while a client is connected (the helper
leaves with ``os._exit`` instead), and converting events to a dv ``EventStore`` (about 1 Mev/s,
``sensors.dv_events.to_dv``) then runs beside the sender instead of in it. A full pipe blocks
``DvServer.send``, so a slow DV client slows the sender rather than losing events.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time

import numpy as np

from pipeline.core.events import EVENT_DTYPE
from sensors.dv_events import to_dv

log = logging.getLogger(__name__)

END = b""  # parent -> helper: no more events
START_S = 30.0  # how long the helper may take to start listening
DRAIN_S = 10.0  # at close, how long the helper may take to send what a client has not read yet


def serve(conn, settings: dict) -> None:
    """Helper process: a ``NetworkWriter`` fed with raw canonical event records from ``conn``.

    ``settings``: host, port, width, height (px), camera (the source name clients see) and
    wait_s (before the first events, wait up to this long for a client). Protocol on the pipe
    (raw bytes, nothing pickled): the helper answers ``b"listening"`` or ``b"error: ..."``; the
    parent sends event records (16 bytes each) and ``END``; the helper waits until its queue is
    sent, answers ``b"done"`` and leaves with ``os._exit``.
    """
    import dv_processing as dv

    try:
        stream = dv.io.Stream.EventStream(0, "events", settings["camera"],
                                          (settings["width"], settings["height"]))
        writer = dv.io.NetworkWriter(settings["host"], settings["port"], stream)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, whatever it is
        conn.send_bytes(f"error: {exc}".encode())
        os._exit(1)
    conn.send_bytes(b"listening")
    deadline = time.monotonic() + settings["wait_s"]
    while writer.getClientCount() < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:  # the parent vanished
            os._exit(0)
        if data == END:
            break
        writer.writeEvents(to_dv(np.frombuffer(data, EVENT_DTYPE)))
    deadline = time.monotonic() + DRAIN_S
    while writer.getClientCount() and writer.getQueuedPacketCount() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # let the kernel deliver the last bytes
    conn.send_bytes(b"done")
    os._exit(0)


class DvServer:
    """A DV-protocol server on ``host``:``port`` for a ``width`` x ``height`` event stream named
    ``camera``, listening once the constructor returns (RuntimeError naming ``name`` and the
    address when it cannot). ``send`` passes canonical events on; ``close`` waits until they
    left (at most DRAIN_S) and ends the helper. ``sent`` counts the events passed on."""

    def __init__(self, host: str, port: int, width: int, height: int, camera: str = "evpipe",
                 wait_s: float = 0.0, name: str = "dv_server"):
        self.name = name
        self.sent = 0
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        settings = {"host": host, "port": port, "width": width, "height": height,
                    "camera": camera, "wait_s": wait_s}
        self.proc = ctx.Process(target=serve, args=(child, settings), name=f"{name}-dv", daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(START_S):
            self.close()
            raise RuntimeError(f"{name}: DV server helper did not start within {START_S:g} s")
        answer = self.conn.recv_bytes()
        if answer != b"listening":
            self.close()
            raise RuntimeError(f"{name}: cannot serve on {host}:{port}: {answer.decode()}")
        log.info("%s: DV server on %s:%d (%dx%d)", name, host, port, width, height)

    def send(self, events: np.ndarray) -> None:
        """Pass canonical events (``EVENT_DTYPE``, C-contiguous) to the clients."""
        if len(events):
            self.conn.send_bytes(memoryview(events).cast("B"))
            self.sent += len(events)

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.conn.send_bytes(END)
            if self.conn.poll(DRAIN_S + 5):
                self.conn.recv_bytes()
        except (OSError, EOFError):
            log.warning("%s: DV server helper already gone", self.name)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
        self.conn.close()
        self.proc = None
