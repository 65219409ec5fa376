"""DV network output: events served over the DV protocol by dv-processing's ``NetworkWriter``.

The writer lives in a helper process (``serve``) fed through a pipe, for two reasons:
dv-processing 2.0's writer destructor can deadlock while a client is connected (the helper
leaves with ``os._exit`` instead), and converting events to a dv ``EventStore`` (about 1 Mev/s,
``sensors.dv_events.to_dv``) then runs beside the sender instead of in it. A full pipe blocks
``DvServer.send``, so a slow helper slows the sender rather than losing events.

Where events can be lost, and what is done about it (dv-processing 2.0, measured on loopback):

- the writer sends every packet to every connected client (its per-client buffer grows when a
  client reads slowly); events written while no client is connected go to nobody: they are
  counted as ``unheard``;
- a ``NetworkReader`` reads its socket in a thread of its own into a queue of at most 1000
  packets and drops the packets that arrive while it is full, without saying so. A client
  that lags by more than 1000 packets loses events however fast the server is. The helper
  therefore merges the events it receives into DV packets of ``packet_us`` of sensor time
  (10 ms by default), held at most ``packet_us`` of wall time: at camera rate 100 packets a
  second, so a client may lag by 10 s of events before it loses any, where one DV packet per
  1 ms packet of the graph gave it 1 s;
- a ``NetworkReader`` whose server goes away discards what it holds unread. At close the
  helper therefore keeps serving until every client has left, or ``linger_s`` has passed.

TLS (``tls``: certificate chain, private key, CA file, PEM): the writer takes only clients
whose certificate the CA signed. dv-processing's ``NetworkReader`` takes a certificate and a key
but no CA file, so a client does not check the server's certificate.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time

import numpy as np

from pipeline.core.events import EVENT_DTYPE, concat_records
from sensors.dv_events import to_dv

log = logging.getLogger(__name__)

END = b""  # parent -> helper: no more events
START_S = 30.0  # how long the helper may take to start listening
DRAIN_S = 10.0  # at close, how long the helper may take to send what a client has not read yet
MAX_PACKET_EVENTS = 500_000  # a DV packet holds at most this many events (8 MB)


class Packets:
    """Merges event chunks into DV packets of ``packet_us`` of sensor time, none held longer
    than ``packet_us`` of wall time, and writes them; counts the events written (``written``),
    those written while no client was connected (``unheard``) and the packets (``packets``)."""

    def __init__(self, writer, packet_us: int):
        self.writer = writer
        self.packet_us = packet_us
        self.held: list[np.ndarray] = []
        self.held_events = 0
        self.held_since = 0.0  # time.monotonic() of the first chunk held
        self.written = self.unheard = self.packets = 0

    def timeout_s(self) -> float | None:
        """How long the next chunk may take before what is held must go (None: nothing held)."""
        if not self.held:
            return None
        return max(0.0, self.held_since + self.packet_us / 1e6 - time.monotonic())

    def add(self, events: np.ndarray) -> None:
        if not len(events):
            return
        if not self.held:
            self.held_since = time.monotonic()
        self.held.append(events)
        self.held_events += len(events)
        if (events["t"][-1] - self.held[0]["t"][0] >= self.packet_us
                or self.held_events >= MAX_PACKET_EVENTS or self.timeout_s() == 0):
            self.flush()

    def flush(self) -> None:
        if not self.held:
            return
        events = concat_records(self.held)
        self.held, self.held_events = [], 0
        if self.writer.getClientCount() < 1:
            self.unheard += len(events)
        self.writer.writeEvents(to_dv(events))
        self.written += len(events)
        self.packets += 1


def open_writer(settings: dict):
    """The ``NetworkWriter`` of ``settings`` (host, port, width, height, camera, tls)."""
    import dv_processing as dv

    stream = dv.io.Stream.EventStream(0, "events", settings["camera"],
                                      (settings["width"], settings["height"]))
    if settings["tls"]:
        certificate, key, ca = settings["tls"]
        return dv.io.NetworkWriter(settings["host"], settings["port"], stream, certificate, key, ca)
    return dv.io.NetworkWriter(settings["host"], settings["port"], stream)


def serve(conn, settings: dict) -> None:
    """Helper process: a ``NetworkWriter`` fed with raw canonical event records from ``conn``.

    ``settings``: host, port, width, height (px), camera (the source name clients see), wait_s
    (before the first events, wait up to this long for a client), packet_us (sensor time per DV
    packet, us), linger_s (at the end, serve until the clients leave, this long at most) and tls (None, or the PEM files: certificate chain, private key, CA). Protocol on
    the pipe (raw bytes, nothing pickled): the helper answers ``b"listening"`` or ``b"error:
    ..."``; the parent sends event records (16 bytes each) and ``END``; the helper writes what
    it holds, waits until its queue is sent and the clients have left (``linger_s`` at most), answers ``b"done WRITTEN UNHEARD PACKETS"`` and
    leaves with ``os._exit``.
    """
    try:
        writer = open_writer(settings)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, whatever it is
        conn.send_bytes(f"error: {exc}".encode())
        os._exit(1)
    conn.send_bytes(b"listening")
    deadline = time.monotonic() + settings["wait_s"]
    while writer.getClientCount() < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    packets = Packets(writer, settings["packet_us"])
    while True:
        timeout = packets.timeout_s()
        if timeout is not None and not conn.poll(timeout):
            packets.flush()
            continue
        try:
            data = conn.recv_bytes()
        except EOFError:  # the parent vanished
            os._exit(0)
        if data == END:
            break
        packets.add(np.frombuffer(data, EVENT_DTYPE))
    packets.flush()
    deadline = time.monotonic() + DRAIN_S
    while writer.getClientCount() and writer.getQueuedPacketCount() and time.monotonic() < deadline:
        time.sleep(0.005)
    deadline = time.monotonic() + max(settings["linger_s"], 0.2)  # 0.2 s: the last bytes
    while writer.getClientCount() and time.monotonic() < deadline:
        time.sleep(0.01)
    conn.send_bytes(f"done {packets.written} {packets.unheard} {packets.packets}".encode())
    os._exit(0)


class DvServer:
    """A DV-protocol server on ``host``:``port`` for a ``width`` x ``height`` event stream named
    ``camera``, listening once the constructor returns (RuntimeError naming ``name`` and the
    address when it cannot). ``send`` passes canonical events on; ``close`` waits until they
    left (at most DRAIN_S) and ends the helper. ``sent`` counts the events passed on; after
    ``close`` (which waits for the clients to leave, ``linger_s`` at most), ``written`` those
    the writer took, ``unheard`` those of them written while no
    client was connected, and ``packets`` the DV packets (None when the helper did not say)."""

    def __init__(self, host: str, port: int, width: int, height: int, camera: str = "evpipe",
                 wait_s: float = 0.0, name: str = "dv_server", packet_us: int = 10_000,
                 linger_s: float = 1.0, tls: tuple[str, str, str] | None = None):
        self.name = name
        self.sent = 0
        self.written = self.unheard = self.packets = None
        self.linger_s = linger_s
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        settings = {"host": host, "port": port, "width": width, "height": height,
                    "camera": camera, "wait_s": wait_s, "packet_us": packet_us, "linger_s": linger_s,
                    "tls": tls}
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
        log.info("%s: DV server on %s:%d (%dx%d%s)", name, host, port, width, height,
                 ", TLS" if tls else "")

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
            if self.conn.poll(DRAIN_S + self.linger_s + 5):
                answer = self.conn.recv_bytes().split()
                if answer[:1] == [b"done"]:
                    self.written, self.unheard, self.packets = (int(x) for x in answer[1:4])
        except (OSError, EOFError):
            log.warning("%s: DV server helper already gone", self.name)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
        self.conn.close()
        self.proc = None
