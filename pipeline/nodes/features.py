"""Feature stages: event filters, time surfaces, HOTS and HATS (numba kernels in ``kernels/``).

Filters ("denoise", "refractory", "polarity_filter", "roi", "hot_pixels") emit canonical events,
one packet per input packet (possibly empty, so segment markers always pass).

"time_surface" emits the global exponential surface as ``surface`` records (dtype name
``"surface"``: t int64 us sample time, x, y int16, c int8 channel, value float32), one record per
pixel whose value is at least ``min_value``; sampled every ``period_us`` of sensor time (at exact
multiples, counting only events strictly before the sample time) and at each segment end.

"hots" emits FEATURE_DTYPE events (t, x, y, f = prototype index); layers chain by feeding one
hots stage into the next with ``in_channels`` = the previous layer's ``n_prototypes``.

"hats" emits its histograms as ``hats`` records (dtype name ``"hats"``), one record per histogram
bin, in C order over (cell, channel, dy, dx): ``records["value"]`` is directly the feature vector
(length cells * 2 * (2 rho + 1)^2) that a classifier or SNN input layer consumes. Fields: t int64
(us, readout time), cell int32 (row-major cell index), count int32 (events in the cell, |C|),
value float32, c int8 (polarity channel), dy, dx int8 (offset from the event, pixels). Emitted at
every segment end (with the segment and its label) and every ``period_us`` if set; the state is
reset at every segment start (one histogram per sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kernels.filters import (
    background_activity_records,
    count_events,
    last_times,
    pixel_mask,
    refractory,
)
from kernels.hats import HatsState
from kernels.hots import MODES, hots_map, hots_records, screening_tables, surface_dim
from kernels.timesurface import sae_new, sae_update, sample_surface
from pipeline.core.events import FEATURE_DTYPE, register_dtype
from pipeline.core.model import NPZ_ERRORS
from pipeline.core.nodetype import (
    EVENTS,
    FEATURES,
    STAGE,
    ParamError,
    Params,
    node_type,
    param,
    path_field,
)
from pipeline.core.packet import Packet, Segment, events_packet
from pipeline.core.stage import Stage, warm_up_packets

SURFACE, HATS = "surface", "hats"  # record kinds (dtype names) of the time_surface and hats stages
SURFACE_DTYPE = register_dtype(SURFACE, np.dtype(
    [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("c", "i1"), ("value", "<f4")], align=True))
HATS_DTYPE = register_dtype(HATS, np.dtype(
    [("t", "<i8"), ("cell", "<i4"), ("count", "<i4"), ("value", "<f4"), ("c", "i1"),
     ("dy", "i1"), ("dx", "i1")], align=True))


class _FeatureStage(Stage):
    """Shared plumbing: sensor size from the first packet, output stamping."""

    def __init__(self, name: str, params):
        super().__init__(name)
        self.params = params
        self.seq = 0
        self.size: tuple[int, int] | None = None

    def emit(self, records: np.ndarray, header, dtype: str, segment: Segment | None) -> Packet:
        packet = events_packet(self.name, self.seq, records, header.width, header.height,
                               segment=segment, dtype=dtype)
        self.seq += 1
        return packet

    def process(self, packet: Packet) -> list[Packet]:
        header = packet.header
        if self.size != (header.width, header.height):
            self.size = (header.width, header.height)
            self.start(header.width, header.height)
        return self.handle(packet)

    def start(self, width: int, height: int) -> None:
        """Allocate state for a sensor of this size (called on the first packet)."""

    def warm_up(self) -> None:
        """Process ``warm_up_packets`` of each kind taken (a 1 x 1 sensor); the first real packet
        then allocates the state afresh."""
        for kind in self.params.accepts:
            for packet in warm_up_packets(kind, 1, 1):
                self.process(packet)
        self.size, self.seq = None, 0

    def handle(self, packet: Packet) -> list[Packet]:
        raise NotImplementedError


class _Filter(_FeatureStage):
    """A filter: ``keep(events, mask)`` fills the boolean mask; kept events go downstream.
    With a true ``per_segment`` parameter the state starts afresh at each segment start."""

    def handle(self, packet: Packet) -> list[Packet]:
        segment = packet.header.segment
        if getattr(self.params, "per_segment", False) and segment is not None and segment.start:
            self.start(*self.size)
        return [self.emit(self.kept(packet.records), packet.header, EVENTS,
                          packet.header.segment)]

    def kept(self, events: np.ndarray) -> np.ndarray:
        """The events the filter keeps (a new array: the input stays untouched)."""
        mask = np.empty(len(events), bool)
        self.keep(events, mask)
        return events[mask]

    def keep(self, events: np.ndarray, mask: np.ndarray) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class FilterParams(Params):
    """A filter: camera events in, the events it keeps out."""

    accepts = (EVENTS,)
    emits = (EVENTS,)


@dataclass(frozen=True)
class DenoiseParams(FilterParams):
    """The denoise stage keeps an event when one of its 8 neighbour pixels had an event less
    than ``duration_us`` before it (dv-processing's background-activity filter)."""

    duration_us: int = param(2000, "support window: how recent a neighbour event must be",
                             unit="us", ge=1)
    dv_compatible: bool = param(True, "pixel memory starts at t = 0 like dv-processing (events "
                                      "in the first duration_us of the clock pass), else at minus "
                                      "infinity")
    per_segment: bool = param(False, "forget the past at each segment start (dataset recordings "
                                     "each have their own time base)")


@node_type("denoise", STAGE, DenoiseParams, weight=8.0)
class Denoise(_Filter):
    """Background-activity filter: keeps events with a neighbour event in the last duration_us."""

    def start(self, width, height):
        self.last = last_times(width, height, self.params.dv_compatible)

    def kept(self, events):
        out = np.empty(len(events), events.dtype)
        return out[:background_activity_records(events, self.last, self.params.duration_us, out)]


@dataclass(frozen=True)
class RefractoryParams(FilterParams):
    """The refractory stage drops an event closer than ``period_us`` to its pixel's last kept
    event (both polarities share the pixel's state)."""

    period_us: int = param(1000, "minimum time between two kept events of one pixel", unit="us",
                           ge=0)


@node_type("refractory", STAGE, RefractoryParams)
class Refractory(_Filter):
    """Refractory period: drops events closer than period_us to the pixel's last kept event."""

    def start(self, width, height):
        self.last = last_times(width, height)

    def keep(self, events, mask):
        refractory(events["t"], events["x"], events["y"], self.last, self.params.period_us, mask)


@dataclass(frozen=True)
class PolarityParams(FilterParams):
    """The polarity filter keeps the events whose polarity is ``polarity``."""

    polarity: Literal[0, 1] = param(1, "1 keeps ON events, 0 keeps OFF events")


@node_type("polarity_filter", STAGE, PolarityParams)
class PolarityFilter(_Filter):
    """Keeps the events of one polarity."""

    def keep(self, events, mask):
        np.equal(events["p"], self.params.polarity, out=mask)


@dataclass(frozen=True)
class RoiParams(FilterParams):
    """The roi stage keeps the events inside the rectangle of top-left corner (``x``, ``y``),
    ``width`` and ``height`` (cut at the sensor border)."""

    x: int = param(0, "left column of the rectangle", unit="px", ge=0)
    y: int = param(0, "top row of the rectangle", unit="px", ge=0)
    width: int = param(1, "rectangle width", unit="px", ge=1)
    height: int = param(1, "rectangle height", unit="px", ge=1)


@node_type("roi", STAGE, RoiParams)
class Roi(_Filter):
    """Keeps the events inside a rectangle."""

    def start(self, width, height):
        p = self.params
        self.mask = np.zeros((height, width), bool)
        self.mask[p.y:p.y + p.height, p.x:p.x + p.width] = True

    def keep(self, events, mask):
        pixel_mask(events["x"], events["y"], self.mask, mask)


@dataclass(frozen=True)
class HotPixelParams(FilterParams):
    """The hot_pixels stage drops the events of the listed ``pixels`` and, when ``learn_us`` > 0,
    of every pixel with more than ``max_count`` events in the stream's first ``learn_us``."""

    pixels: list[int] = param(help="pixels to drop, as a flat list x0, y0, x1, y1, ...",
                              default_factory=list)
    learn_us: int = param(0, "count events during this first part of the stream (passing them "
                             "all), then drop the hot pixels; 0 = no learning", unit="us", ge=0)
    max_count: int = param(100, "a pixel with more events than this while learning is hot",
                           unit="events", ge=0)

    def check(self):
        if len(self.pixels) % 2:
            raise ParamError("pixels", f"expected x, y pairs (an even count), got {len(self.pixels)} numbers")
        if any(value < 0 for value in self.pixels):
            raise ParamError("pixels", "coordinates must be >= 0")


@node_type("hot_pixels", STAGE, HotPixelParams)
class HotPixels(_Filter):
    """Hot-pixel mask: drops listed pixels and, optionally, pixels found hot while learning."""

    def start(self, width, height):
        self.mask = np.ones((height, width), bool)
        xy = np.asarray(self.params.pixels, int).reshape(-1, 2)
        self.mask[xy[:, 1], xy[:, 0]] = False
        self.counts = np.zeros((height, width), np.int64) if self.params.learn_us > 0 else None
        self.learn_until: int | None = None

    def keep(self, events, mask):
        if self.counts is not None and len(events):
            if self.learn_until is None:
                self.learn_until = int(events["t"][0]) + self.params.learn_us
            n = int(np.searchsorted(events["t"], self.learn_until))
            count_events(events["x"][:n], events["y"][:n], self.counts)
            mask[:n] = True
            if n < len(events):
                self.mask &= self.counts <= self.params.max_count
                self.counts = None
            pixel_mask(events["x"][n:], events["y"][n:], self.mask, mask[n:])
            return
        pixel_mask(events["x"], events["y"], self.mask, mask)


class _Sampled(_FeatureStage):
    """A stage that accumulates events and emits a reading every period_us and at segment end."""

    def start(self, width, height):
        self.next_sample: int | None = None
        self.reset()

    def handle(self, packet: Packet) -> list[Packet]:
        events, header, out = packet.records, packet.header, []
        segment = header.segment
        if segment is not None and segment.start:
            self.reset()
            self.next_sample = None
        period = self.params.period_us
        done = 0
        if period > 0 and len(events):
            if self.next_sample is None:
                self.next_sample = int(events["t"][0]) + period
            while events["t"][-1] >= self.next_sample:
                stop = int(np.searchsorted(events["t"], self.next_sample))
                self.update(events[done:stop])
                done = stop
                out.append(self.emit(self.read(self.next_sample), header, self.dtype, None))
                self.next_sample += period
        self.update(events[done:])
        if segment is not None and segment.end:
            out.append(self.emit(self.read(header.t_last), header, self.dtype, segment))
        return out

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, events: np.ndarray) -> None:
        raise NotImplementedError

    def read(self, t: int) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class TimeSurfaceParams(Params):
    """The time_surface stage keeps each pixel's last event time and, every ``period_us`` and at
    each segment end, sends exp(-(t - t_last) / ``tau_us``) of every pixel at or above
    ``min_value``."""

    accepts = (EVENTS,)
    emits = (SURFACE,)

    tau_us: float = param(50_000.0, "decay time constant", unit="us", gt=0)
    period_us: int = param(33_000, "sampling period; 0 = at segment ends only", unit="us", ge=0)
    merge_polarities: bool = param(False, "one channel for both polarities instead of one each")
    min_value: float = param(0.01, "smallest surface value sent (values are within [0, 1])",
                             ge=0, le=1)


@node_type("time_surface", STAGE, TimeSurfaceParams)
class TimeSurface(_Sampled):
    """Global exponential time surface (SAE per polarity), sampled on demand."""

    dtype = SURFACE

    def reset(self):
        width, height = self.size
        self.sae = sae_new(width, height, 1 if self.params.merge_polarities else 2)
        self.values = np.empty(self.sae.shape)

    def update(self, events):
        sae_update(self.sae, events["t"], events["x"], events["y"], events["p"],
                   self.params.merge_polarities)

    def read(self, t):
        sample_surface(self.sae, t, self.params.tau_us, self.values)
        c, y, x = np.nonzero(self.values >= self.params.min_value)
        records = np.empty(len(c), SURFACE_DTYPE)
        records["t"], records["x"], records["y"], records["c"] = t, x, y, c
        records["value"] = self.values[c, y, x]
        return records


@dataclass(frozen=True)
class HatsParams(Params):
    """The hats stage averages the local time surfaces (radius ``rho``) of the events of each
    ``cell`` x ``cell`` cell into histograms (Sironi et al. 2018), read out at every segment end
    and every ``period_us``."""

    accepts = (EVENTS,)
    emits = (HATS,)

    cell: int = param(10, "K, the side of a cell", unit="px", ge=1)
    rho: int = param(3, "radius of the local time surfaces (2 rho + 1 <= cell)", unit="px", ge=0)
    tau_us: float = param(20_000.0, "decay time constant of the surfaces", unit="us", gt=0)
    window_us: int = param(100_000, "delta_t, how far back the local memory looks", unit="us", gt=0)
    period_us: int = param(0, "extra readout period; 0 = at segment ends only", unit="us", ge=0)

    def check(self):
        if 2 * self.rho + 1 > self.cell:
            raise ParamError("rho", f"need 2 rho + 1 <= cell ({self.cell}), got rho = {self.rho}")


@node_type("hats", STAGE, HatsParams)
class Hats(_Sampled):
    """HATS histograms of averaged time surfaces, one feature vector per segment."""

    dtype = HATS

    def reset(self):
        p = self.params
        width, height = self.size
        self.state = HatsState(width, height, p.cell, p.rho, p.tau_us, p.window_us)
        side = 2 * p.rho + 1
        self.layout = np.indices((self.state.n_cells, 2, side, side)).reshape(4, -1)

    def update(self, events):
        self.state.update(events)

    def read(self, t):
        cell, c, dy, dx = self.layout
        records = np.empty(cell.size, HATS_DTYPE)
        records["t"], records["cell"], records["c"] = t, cell, c
        records["dy"], records["dx"] = dy - self.params.rho, dx - self.params.rho
        records["count"] = self.state.counts[cell]
        records["value"] = self.state.histogram().reshape(-1)
        return records


@dataclass(frozen=True)
class HotsParams(Params):
    """The hots stage is one HOTS layer (Lagorce et al. 2017): the time surface of radius
    ``radius`` around each event, decaying with ``tau_us``, is matched to the nearest of
    ``n_prototypes`` prototypes, whose index is emitted as the event's feature; layers chain by
    feeding one hots stage into the next with ``in_channels`` = the previous ``n_prototypes``."""

    accepts = (EVENTS, FEATURES)
    emits = (FEATURES,)

    radius: int = param(2, "R: surfaces span (2 R + 1) x (2 R + 1) pixels", unit="px", ge=0)
    tau_us: float = param(20_000.0, "decay time constant of the surfaces", unit="us", gt=0)
    n_prototypes: int = param(16, "N, the number of prototypes (features)", ge=1)
    mode: Literal["same", "all", "merge"] = param(
        "same", "channels of a surface: the event's own (same), every one concatenated (all), or "
                "one with polarity ignored (merge)")
    in_channels: int = param(2, "input channels: 2 for camera events, the previous layer's "
                                "n_prototypes for feature events", ge=1)
    learn: bool = param(True, "online clustering with the paper's schedule")
    prototypes: str | None = path_field(None, "prototypes to start from: a .npy (dim, N) array, "
                                              "or a .npz model file holding it under "
                                              "hots_prototypes; required when learn is false")

    def check(self):
        if self.prototypes is None and not self.learn:
            raise ParamError("prototypes", "required when learn is false")

    def check_files(self):
        if self.prototypes is not None:
            prototypes_for(self)


def load_prototypes(path: str) -> np.ndarray:
    """HOTS prototypes from a .npy array or a model .npz (key ``hots_prototypes``)."""
    if not path.endswith(".npz"):
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as archive:
        if "hots_prototypes" not in archive:
            raise ValueError(f"{path} holds no 'hots_prototypes' array")
        return archive["hots_prototypes"]


def prototypes_for(params: HotsParams) -> np.ndarray:
    """The (dim, N) float64 prototypes file of ``params``, checked against its radius, mode,
    channels and N; ParamError names the parameter that disagrees with the file."""
    try:
        protos = np.ascontiguousarray(load_prototypes(params.prototypes), dtype=np.float64)
    except NPZ_ERRORS as exc:
        raise ParamError("prototypes", f"cannot read prototypes: {exc}") from None
    dim = surface_dim(params.in_channels, params.radius, MODES[params.mode])
    if protos.ndim != 2:
        raise ParamError("prototypes", f"{params.prototypes} holds a {protos.ndim}-d array, "
                                       f"expected (surface length, n_prototypes)")
    if protos.shape[0] != dim:
        raise ParamError("radius", (
            f"radius {params.radius} with mode {params.mode!r} and in_channels "
            f"{params.in_channels} makes surfaces of {dim} values, but the prototypes in "
            f"{params.prototypes} have {protos.shape[0]}"))
    if protos.shape[1] != params.n_prototypes:
        raise ParamError("n_prototypes", f"{params.prototypes} holds {protos.shape[1]} prototypes, "
                                         f"got n_prototypes = {params.n_prototypes}")
    return protos


@node_type("hots", STAGE, HotsParams, weight=14.0)
class Hots(_FeatureStage):
    """One HOTS layer: events (or features) in, feature events (t, x, y, f) out."""

    def start(self, width, height):
        p = self.params
        self.mode = MODES[p.mode]
        dim = surface_dim(p.in_channels, p.radius, self.mode)
        if p.prototypes is not None:
            self.protos = prototypes_for(p)
            self.hits = np.ones(p.n_prototypes, np.int64)
        else:
            self.protos = np.zeros((dim, p.n_prototypes))
            self.hits = np.zeros(p.n_prototypes, np.int64)
        self.memory = hots_map(width, height, p.in_channels, p.radius, self.mode)
        self.tables = screening_tables(self.protos)  # kept current by the kernel while learning

    def handle(self, packet: Packet) -> list[Packet]:
        p, events = self.params, packet.records
        segment = packet.header.segment
        if segment is not None and segment.start:  # a new sample: its own time base
            self.memory = hots_map(*self.size, p.in_channels, p.radius, self.mode)
        out = np.empty(len(events), FEATURE_DTYPE)
        hots_records(events, *self.memory, p.radius, p.tau_us, self.mode, self.protos, self.hits,
                     p.learn, *self.tables, out)
        return [self.emit(out, packet.header, FEATURES, segment)]
