"""Live and synthetic source node types: "camera", "dv_network", "synthetic"."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.nodetype import SOURCE, ParamError, node_type, param, path_field
from pipeline.nodes.basic import PacketParams
from sensors.camera import CameraSource
from sensors.network import NetworkSource
from sensors.synthetic import Scene, SyntheticSource


@dataclass(frozen=True)
class LiveParams(PacketParams):
    """A live source cuts the events it receives into packets of ``packet_us`` sensor time or
    ``packet_events`` events, and reconnects after a loss, waiting ``backoff_s`` at first and
    doubling up to ``backoff_max_s``; after ``retries`` failed attempts in a row it gives up and
    ends its stream."""

    backoff_s: float = param(0.1, "first reconnection delay", unit="s", gt=0)
    backoff_max_s: float = param(5.0, "longest reconnection delay", unit="s", gt=0)
    retries: int = param(0, "failed connection attempts in a row before the source gives up and "
                            "ends its stream; 0: never give up", ge=0)

    def check(self):
        super().check()
        if self.backoff_max_s < self.backoff_s:
            raise ParamError("backoff_max_s", f"must be at least backoff_s ({self.backoff_s:g} s), "
                                              f"got {self.backoff_max_s:g}")


@dataclass(frozen=True)
class CameraParams(LiveParams):
    """The camera source opens the iniVation camera ``serial`` and streams its events."""

    serial: str = param("", "camera serial number; empty: the first camera found (see "
                            "`evpipe devices`)")


@dataclass(frozen=True)
class NetworkParams(LiveParams):
    """The dv_network source connects to a DV event stream server at ``host``:``port`` (or the
    UNIX ``socket``) and streams its events."""

    host: str = param("127.0.0.1", "server host name or address")
    port: int = param(7777, "server TCP port", ge=1, le=65535)
    socket: str = param("", "UNIX socket path; wins over host and port when given")
    end_on_close: bool = param(False, "end the stream when the server closes it, instead of "
                                      "reconnecting (a recording served once)")
    tls_certificate: str = path_field("", "TLS (tcp only): this client's certificate (PEM), "
                                          "signed by the CA the server accepts")
    tls_key: str = path_field("", "TLS: this client's private key (PEM)")

    def check(self):
        super().check()
        if bool(self.tls_certificate) != bool(self.tls_key):
            raise ParamError("tls_key" if self.tls_certificate else "tls_certificate",
                             "a TLS client names tls_certificate and tls_key")
        if self.tls_certificate and self.socket:
            raise ParamError("tls_certificate", "TLS goes over tcp (host, port), not a UNIX socket")


@dataclass(frozen=True)
class SyntheticParams(PacketParams):
    """The synthetic source draws ``shapes`` discs moving at ``speed_px_s`` on a ``width`` x
    ``height`` sensor, emitting ``rate`` events per second of sensor time (a ``noise`` fraction
    of them background noise), paced at ``speed_factor`` times real time."""

    width: int = param(320, "sensor width", unit="px", ge=1)
    height: int = param(240, "sensor height", unit="px", ge=1)
    rate: float = param(1e6, "events per second of sensor time", unit="events/s", gt=0)
    speed_px_s: float = param(200.0, "speed of the discs", unit="px/s", ge=0, aliases=("speed",))
    shapes: int = param(3, "number of discs", ge=1)
    radius: float = param(20.0, "disc radius", unit="px", gt=0)
    noise: float = param(0.05, "fraction of the events that are background noise", ge=0, le=1)
    seed: int = param(0, "random seed: the same seed gives the same events", ge=0)
    duration_us: int = param(0, "sensor time to generate; 0 = forever", unit="us", ge=0)
    speed_factor: float = param(1.0, "pacing: times real time; 0 = as fast as possible", ge=0)


def live_options(params: LiveParams) -> dict:
    return dict(packet_us=params.packet_us, packet_events=params.packet_events,
                backoff_s=params.backoff_s, backoff_max_s=params.backoff_max_s,
                retries=params.retries)


@node_type("camera", SOURCE, CameraParams)
class Camera(CameraSource):
    """A live iniVation camera (dv-processing), reopened with backoff when unplugged."""

    def __init__(self, name: str, params: CameraParams):
        super().__init__(name, params.serial, **live_options(params))


@node_type("dv_network", SOURCE, NetworkParams)
class DvNetwork(NetworkSource):
    """Events from DV software or a dv-processing NetworkWriter (TCP or UNIX socket)."""

    def __init__(self, name: str, params: NetworkParams):
        super().__init__(name, params.host, params.port, params.socket, params.tls_certificate,
                         params.tls_key, end_on_close=params.end_on_close, **live_options(params))


@node_type("synthetic", SOURCE, SyntheticParams)
class Synthetic(SyntheticSource):
    """A deterministic scene of moving discs plus noise at a chosen event rate."""

    def __init__(self, name: str, params: SyntheticParams):
        scene = Scene(params.width, params.height, params.rate, params.speed_px_s, params.shapes,
                      params.radius, params.noise, params.seed)
        super().__init__(name, scene, params.duration_us, params.speed_factor, params.packet_us,
                         params.packet_events)
        self.paced = params.speed_factor > 0
