"""Sinks for machines and people: the decision stream, DV network output, AEDAT4 recorder, viewer.

- ``decisions``: ZeroMQ PUB of decision records, one two-frame message per decision (topic,
  UTF-8 JSON object); the format is specified in docs/decisions.md.
- ``dv_server``: events served with dv-processing's ``NetworkWriter`` (the DV protocol,
  ``sensors.dv_server``), so DV software and any dv-processing ``NetworkReader`` can watch the
  stream.
- ``aedat4``: events recorded to an AEDAT 4.0 file (``sensors.writers.Aedat4Writer``).
- ``viewer``: the live viewer of ``pipeline.ui.viewer``, shown or saved headless.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from pipeline.core.events import EVENT_DTYPE, JSON_DTYPE_NAME
from pipeline.core.nodetype import (
    EVENTS,
    JSON,
    SINK,
    ParamError,
    Params,
    check_size,
    node_type,
    param,
    path_field,
)
from pipeline.core.packet import Packet, origin_fields
from pipeline.core.stage import Sink
from pipeline.nodes.snn import SPIKES
from pipeline.security import CertificateError, Guard, load_key
from sensors.dv_server import DvServer
from sensors.writers import Aedat4Writer

log = logging.getLogger(__name__)


def _event_records(sink: str, packet: Packet) -> np.ndarray:
    """The camera events of ``packet``; TypeError names the sink and what it got instead."""
    if packet.header.dtype != "events":
        raise TypeError(f"{sink}: expected 'events' packets, got {packet.header.dtype!r} "
                        f"from {packet.header.stream!r}")
    return np.ascontiguousarray(packet.records, dtype=EVENT_DTYPE)


# ---- decisions: ZeroMQ PUB ------------------------------------------------------------------

# the handshake failures a CURVE server's socket monitor reports: a key the ZAP handler refused
# (AUTH), and a client with no keys or another mechanism (PROTOCOL or NO_DETAIL, as it happens)
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@dataclass(frozen=True)
class DecisionsParams(Params):
    """The decisions sink binds a ZeroMQ PUB socket at ``address`` and publishes each decision
    record as one message [``topic``, JSON]; with ``curve_server`` and ``curve_clients`` only the
    listed clients get them, encrypted (CurveZMQ, docs/wire.md "Security")."""

    accepts = (JSON,)

    address: str = param("tcp://127.0.0.1:5560", "where the PUB socket binds (tcp://HOST:PORT or "
                                                 "ipc://PATH)")
    topic: str = param("decisions", "first frame of every message (subscribers filter on its "
                                    "prefix)")
    hwm: int = param(1000, "decisions queued per subscriber at most; beyond, they are dropped "
                           "and counted", unit="decisions", ge=1)
    wait_s: float = param(0.0, "before the first publication, wait up to this long for a "
                               "subscriber", unit="s", ge=0)
    linger_ms: int = param(1000, "at close, how long queued decisions may still be delivered",
                           unit="ms", ge=0)
    curve_server: str = path_field("", "CURVE: base path of this sink's certificate pair "
                                       "(.key_secret read here; consumers hold .key)")
    curve_clients: str = path_field("", "CURVE: folder of the public certificates (.key) of the "
                                        "consumers accepted")

    def check(self):
        if "://" not in self.address:
            raise ParamError("address", f"expected tcp://HOST:PORT or ipc://PATH, got {self.address!r}")
        if bool(self.curve_server) != bool(self.curve_clients):
            key = "curve_clients" if self.curve_server else "curve_server"
            raise ParamError(key, "a CURVE decisions sink names curve_server and curve_clients")
        if self.curve_server:
            if not self.address.startswith("tcp://"):
                raise ParamError("curve_server", f"CURVE needs a tcp:// address, got {self.address!r}")
            try:
                load_key(self.curve_server, secret=True)
            except CertificateError as exc:
                raise ParamError("curve_server", str(exc)) from None
            if not os.path.isdir(self.curve_clients):
                raise ParamError("curve_clients", f"{self.curve_clients}: no folder of accepted "
                                                  "client certificates")


@node_type("decisions", SINK, DecisionsParams)
class DecisionsSink(Sink):
    """Publishes each decision record as one ZeroMQ message [topic, JSON] (docs/decisions.md).

    The socket is an XPUB with ``XPUB_NODROP``: a decision that finds a subscriber's queue full
    is not sent and is counted in ``dropped``, the pipeline never blocks. ``XPUB_VERBOSER``
    passes every subscription and unsubscription up, so the sink knows whether anyone listens:
    a decision published while no subscription matches the topic reaches nobody (PUB sockets
    keep nothing for later subscribers) and is counted in ``unheard``. With CURVE, every failed
    handshake (wrong keys, no keys) is logged once per kind and counted in ``refused``; the sink
    goes on. Each message adds ``origin_ns`` (when the source obtained the deciding events: the
    origin of the packet the record came with), ``e2e_latency_ns`` (``published_ns -
    origin_ns``), ``seq`` (+1 per decision, so a consumer sees losses), ``published_ns`` (taken
    right before the send) and ``publish_latency_ns`` to the decoder's record.
    """

    def __init__(self, name: str, params: DecisionsParams):
        super().__init__(name)
        self.params = params
        self.topic = params.topic.encode()
        self.ctx = zmq.Context()
        self.guard = Guard(self.ctx)
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, params.hwm)
        self.sock.setsockopt(zmq.XPUB_NODROP, 1)
        self.sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        self.sock.setsockopt(zmq.LINGER, params.linger_ms)
        self.monitor = None
        self.subscriptions: Counter[bytes] = Counter()  # topic prefix -> subscriptions to it
        self.seq = 0
        self.published = 0  # handed to ZeroMQ while a subscription matched
        self.dropped = 0  # a subscriber's queue was full
        self.unheard = 0  # no subscription matched: delivered to nobody
        self.ignored = 0
        self.refused: Counter[str] = Counter()  # failed CURVE handshakes by reason
        try:
            if params.curve_server:
                self.guard.secure_sender(self.sock, params.curve_server, params.curve_clients, name)
                self.monitor = self.sock.get_monitor_socket(HANDSHAKE_FAILED)
            self.sock.bind(params.address)
        except (zmq.ZMQError, CertificateError) as exc:
            self._release()
            raise ValueError(f"{name}: cannot serve on {params.address} ({exc})") from None
        self._waited = params.wait_s == 0

    @property
    def subscribers(self) -> int:
        """Subscriptions matching the topic now (one per subscribed consumer)."""
        return sum(n for prefix, n in self.subscriptions.items() if self.topic.startswith(prefix))

    def _read_subscriptions(self, timeout_ms: int = 0) -> None:
        while self.sock.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            message = self.sock.recv()
            if message[:1] == b"\x01":
                self.subscriptions[message[1:]] += 1
            elif message[:1] == b"\x00" and self.subscriptions[message[1:]] > 0:
                self.subscriptions[message[1:]] -= 1
        while self.monitor is not None and self.monitor.poll(0, zmq.POLLIN):
            event = recv_monitor_message(self.monitor)["event"]
            reason = ("a key not in curve_clients" if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                      else "no CURVE keys, or a failed handshake")
            self.refused[reason] += 1
            if self.refused[reason] == 1:
                log.warning("%s: refused a client on %s (%s); counting the others", self.name,
                            self.params.address, reason)

    def _wait_for_subscriber(self) -> None:
        deadline = time.monotonic() + self.params.wait_s
        while self.subscribers < 1 and time.monotonic() < deadline:
            self._read_subscriptions(50)
        if self.subscribers < 1:
            log.warning("%s: no subscriber on %s after %.1f s; publishing anyway", self.name,
                        self.params.address, self.params.wait_s)
        self._waited = True

    def consume(self, packet: Packet) -> None:
        header = packet.header
        if header.dtype != JSON_DTYPE_NAME:
            self._ignore(f"{header.dtype!r} packets from {header.stream!r}")
            return
        if not self._waited:
            self._wait_for_subscriber()
        self._read_subscriptions()
        heard = self.subscribers > 0
        for record in packet.records:
            if not isinstance(record, dict) or "class" not in record:
                self._ignore(f"a JSON record that is not a decision: {str(record)[:80]}")
                continue
            now = time.time_ns()
            message = dict(record, **origin_fields(header.origin_ns, now), seq=self.seq,
                           published_ns=now,
                           publish_latency_ns=(record.get("decoder_ns", 0) + now - header.sent_ns)
                           if header.sent_ns else None)
            self.seq += 1
            if not heard:
                self.unheard += 1
            try:
                self.sock.send_multipart([self.topic, json.dumps(message).encode()], zmq.NOBLOCK)
                self.published += heard
            except zmq.Again:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("%s: subscriber queue full, %d decision(s) dropped so far", self.name, self.dropped)

    def _ignore(self, what: str) -> None:
        self.ignored += 1
        if self.ignored == 1:
            log.warning("%s: ignoring %s (this sink publishes decision records)", self.name, what)

    def counters(self) -> dict[str, int]:
        return {"unheard": self.unheard, "dropped_full": self.dropped,
                "refused": sum(self.refused.values())}

    def summary(self) -> str:
        """One line: decisions published, dropped, unheard, and clients refused."""
        refused = sum(self.refused.values())
        return (f"{self.name}: {self.seq} decisions on {self.params.address}: {self.published} "
                f"published, {self.dropped} dropped (subscriber queues full), {self.unheard} "
                f"unheard (no subscriber)" + (f", {refused} refused handshakes" if refused else ""))

    def close(self) -> None:
        self._read_subscriptions()
        (log.warning if self.dropped or self.unheard else log.info)("%s", self.summary())
        self._release()

    def _release(self) -> None:
        if self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close(linger=0)
        self.sock.close()
        self.guard.stop()
        self.ctx.term()


# ---- DV protocol: dv-processing NetworkWriter in a helper process ---------------------------

TLS_KEYS = ("tls_certificate", "tls_key", "tls_ca")


@dataclass(frozen=True)
class DvServerParams(Params):
    """The dv_server sink serves the events it receives over the DV network protocol on
    ``host``:``port``, as a ``width`` x ``height`` stream named ``camera``, in DV packets of
    ``packet_us`` of sensor time; with ``tls_certificate``, ``tls_key`` and ``tls_ca``, over TLS
    to the clients whose certificate ``tls_ca`` signed."""

    accepts = (EVENTS,)

    host: str = param("127.0.0.1", "address the DV server listens on")
    port: int = param(7777, "TCP port the DV server listens on", ge=1, le=65535)
    width: int = param(0, "sensor width; 0 = from the first packet (the server starts then)",
                       unit="px", ge=0)
    height: int = param(0, "sensor height; 0 = from the first packet", unit="px", ge=0)
    camera: str = param("evpipe", "source name DV clients see")
    wait_s: float = param(0.0, "before the first events, wait up to this long for a client",
                          unit="s", ge=0)
    packet_us: int = param(10_000, "sensor time per DV packet, and the longest wall time events "
                                   "are held to fill one (a DV NetworkReader drops "
                                   "what arrives while 1000 packets wait to be read)",
                           unit="us", ge=1)
    linger_s: float = param(1.0, "at the end, keep serving until every client has left, this "
                                 "long at most (a NetworkReader discards what it has not read "
                                 "when its server goes)", unit="s", ge=0)
    tls_certificate: str = path_field("", "TLS: the server's certificate chain (PEM)")
    tls_key: str = path_field("", "TLS: the server's private key (PEM)")
    tls_ca: str = path_field("", "TLS: the CA certificate (PEM) that signed the accepted "
                                 "clients' certificates")

    def check(self):
        check_size(self, "the first packet")
        given = [bool(getattr(self, key)) for key in TLS_KEYS]
        if any(given) and not all(given):
            raise ParamError(TLS_KEYS[given.index(False)], "a TLS DV server names tls_certificate, "
                                                           "tls_key and tls_ca")
        for key in TLS_KEYS:
            path = getattr(self, key)
            if path and not os.path.isfile(path):
                raise ParamError(key, f"{path}: no such file")

    @property
    def tls(self) -> tuple[str, str, str] | None:
        return (self.tls_certificate, self.tls_key, self.tls_ca) if self.tls_certificate else None


@node_type("dv_server", SINK, DvServerParams)
class DvServerSink(Sink):
    """Serves events over the DV network protocol (``sensors.dv_server.DvServer``: dv-processing's
    ``NetworkWriter`` in a helper process fed through a pipe, merging events into DV packets of
    ``packet_us``); a full pipe blocks the sink, so a slow DV server slows a lossless graph
    rather than losing events. The server starts with the sink when the params give the size,
    else at the first packet with its size. At close it logs how many events the writer took,
    how many of them went to nobody (written while no client was connected) and in how many DV
    packets."""

    def __init__(self, name: str, params: DvServerParams):
        super().__init__(name)
        self.params = params
        self.server: DvServer | None = None
        self.sent = 0  # events passed to the server
        self.written = self.unheard = self.packets = None  # the server's counts, after close
        if params.width:
            self._start(params.width, params.height)

    @property
    def proc(self):
        """The server's helper process; None before it starts and once the sink is closed."""
        return None if self.server is None else self.server.proc

    def _start(self, width: int, height: int) -> None:
        p = self.params
        self.server = DvServer(p.host, p.port, width, height, p.camera, p.wait_s, self.name,
                               p.packet_us, p.linger_s, p.tls)

    def consume(self, packet: Packet) -> None:
        events = _event_records(self.name, packet)
        if self.server is None:
            self._start(packet.header.width, packet.header.height)
        self.server.send(events)
        self.sent = self.server.sent

    def counters(self) -> dict[str, int]:
        """Events the DV writer took and of them those sent while no client was connected
        (known once the sink has closed)."""
        if self.written is None:
            return {}
        return {"dv_written": self.written, "dv_unheard": self.unheard}

    def close(self) -> None:
        if self.server is None:
            return
        self.server.close()
        self.written, self.unheard, self.packets = (self.server.written, self.server.unheard,
                                                    self.server.packets)
        self.server = None
        if self.written is None:
            log.warning("%s: %d events passed to the DV server, which did not say what it wrote",
                        self.name, self.sent)
            return
        lost = self.sent - self.written
        (log.warning if lost or self.unheard else log.info)(
            "%s: %d of %d events written to the DV writer in %d packets, %d of them while no "
            "client was connected (delivered to nobody)%s", self.name, self.written, self.sent,
            self.packets, self.unheard, f", {lost} not written" if lost else "")


# ---- AEDAT4 recorder ------------------------------------------------------------------------

@dataclass(frozen=True)
class Aedat4Params(Params):
    """The aedat4 sink records the events it receives into the AEDAT 4.0 file ``path``, with the
    first packet's sensor size."""

    accepts = (EVENTS,)

    path: str = path_field(help="output .aedat4 file", required=True)
    camera: str = param("evpipe", "camera name stored in the file")


@node_type("aedat4", SINK, Aedat4Params)
class Aedat4Sink(Sink):
    """Records events into an AEDAT 4.0 file (``sensors.writers.Aedat4Writer``), packet by packet.

    The file (and its folder) is created at the first packet, with that packet's sensor size, and
    completed when the sink closes, also after an error upstream. Events must arrive in time
    order (the format's rule; the writer's FormatError names the file and the event).
    """

    def __init__(self, name: str, params: Aedat4Params):
        super().__init__(name)
        self.params = params
        self.writer: Aedat4Writer | None = None

    def consume(self, packet: Packet) -> None:
        events = _event_records(self.name, packet)
        if self.writer is None:
            header = packet.header
            self.writer = Aedat4Writer(self.params.path, header.width, header.height, self.params.camera)
        self.writer.write(events)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ---- viewer ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ViewerParams(Params):
    """The viewer shows (or saves to ``save``) the event frame and time surface of the events it
    receives, the output neurons of snn spikes and the latest decision, written over the events
    it was made on, redrawn ``fps`` times per second of its ``clock``; each segment of the event
    stream starts the panels afresh."""

    accepts = (EVENTS, SPIKES, JSON)

    fps: float = param(30.0, "redraws per second of the clock, at most", unit="frames/s", gt=0)
    tau_us: float = param(30_000.0, "decay of the event frame", unit="us", gt=0)
    surface_tau_us: float = param(50_000.0, "decay of the time-surface panel", unit="us", gt=0)
    save: str = path_field(help=".png (the last frame, the only one drawn), .gif or .mp4 file; "
                                "empty: show a window")
    clock: Literal["auto", "wall", "stream"] = param(
        "auto", "time base of the redraws: wall, stream (sensor time), or auto: stream when "
                "saving, else wall")
    width: int = param(0, "sensor width; 0 = from the first event packet", unit="px", ge=0)
    height: int = param(0, "sensor height; 0 = from the first event packet", unit="px", ge=0)
    max_frames: int = param(300, "most frames in a saved video", unit="frames", ge=1)

    def check(self):
        check_size(self, "the first event packet")


@node_type("viewer", SINK, ViewerParams)
class ViewerSink(Sink):
    """Live viewer (pipeline/ui/viewer.py): events, time surface, output neurons, decisions."""

    def __init__(self, name: str, params: ViewerParams):
        super().__init__(name)
        from pipeline.ui.viewer import Viewer

        clock = ("stream" if params.save else "wall") if params.clock == "auto" else params.clock
        self.viewer = Viewer(params.width, params.height, params.fps, params.tau_us,
                             params.surface_tau_us, params.save, clock, params.max_frames, title=name)

    def consume(self, packet: Packet) -> None:
        self.viewer.feed(packet)
        self.viewer.maybe_draw()

    def close(self) -> None:
        self.viewer.close()
