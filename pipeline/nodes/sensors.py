"""Live and synthetic source node types: "camera", "dv_network", "synthetic"."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.nodetype import SOURCE, node_type
from sensors.camera import CameraSource
from sensors.network import NetworkSource
from sensors.synthetic import Scene, SyntheticSource


@dataclass(frozen=True)
class LiveParams:
    packet_us: int = 1000  # cut packets every this many us of sensor time
    packet_events: int = 10_000  # or after this many events
    backoff_s: float = 0.1  # first reconnection delay, doubling up to backoff_max_s
    backoff_max_s: float = 5.0


@dataclass(frozen=True)
class CameraParams(LiveParams):
    serial: str = ""  # "" opens the first camera found (see `evpipe devices`)


@dataclass(frozen=True)
class NetworkParams(LiveParams):
    host: str = "127.0.0.1"
    port: int = 7777
    socket: str = ""  # UNIX socket path; wins over host/port


@dataclass(frozen=True)
class SyntheticParams:
    width: int = 320
    height: int = 240
    rate: float = 1e6  # events/s of sensor time
    speed: float = 200.0  # px/s
    shapes: int = 3
    radius: float = 20.0  # px
    noise: float = 0.05  # fraction of background-noise events
    seed: int = 0
    duration_us: int = 0  # 0: forever
    speed_factor: float = 1.0  # pacing: x real time, 0 = as fast as possible
    packet_us: int = 1000
    packet_events: int = 10_000


def live_options(params: LiveParams) -> dict:
    return dict(packet_us=params.packet_us, packet_events=params.packet_events,
                backoff_s=params.backoff_s, backoff_max_s=params.backoff_max_s)


@node_type("camera", SOURCE, CameraParams)
class Camera(CameraSource):
    """A live iniVation camera (dv-processing), reopened with backoff when unplugged."""

    def __init__(self, name: str, params: CameraParams):
        super().__init__(name, params.serial, **live_options(params))


@node_type("dv_network", SOURCE, NetworkParams)
class DvNetwork(NetworkSource):
    """Events from DV software or a dv-processing NetworkWriter (TCP or UNIX socket)."""

    def __init__(self, name: str, params: NetworkParams):
        super().__init__(name, params.host, params.port, params.socket, **live_options(params))


@node_type("synthetic", SOURCE, SyntheticParams)
class Synthetic(SyntheticSource):
    """A deterministic scene of moving discs plus noise at a chosen event rate."""

    def __init__(self, name: str, params: SyntheticParams):
        scene = Scene(params.width, params.height, params.rate, params.speed, params.shapes,
                      params.radius, params.noise, params.seed)
        super().__init__(name, scene, params.duration_us, params.speed_factor, params.packet_us,
                         params.packet_events)
