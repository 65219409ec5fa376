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

from dataclasses import dataclass, field

import numpy as np

from kernels.filters import (
    background_activity,
    count_events,
    last_times,
    pixel_mask,
    refractory,
)
from kernels.hats import HatsState
from kernels.hots import MODES, hots_layer, hots_map, surface_dim
from kernels.timesurface import sae_new, sae_update, sample_surface
from pipeline.core.events import FEATURE_DTYPE, register_dtype
from pipeline.core.nodetype import STAGE, node_type, path_field
from pipeline.core.packet import Packet, Segment, events_packet
from pipeline.core.stage import Stage

SURFACE_DTYPE = register_dtype("surface", np.dtype(
    [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("c", "i1"), ("value", "<f4")], align=True))
HATS_DTYPE = register_dtype("hats", np.dtype(
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

    def handle(self, packet: Packet) -> list[Packet]:
        raise NotImplementedError


class _Filter(_FeatureStage):
    """A filter: ``keep(events, mask)`` fills the boolean mask; kept events go downstream.
    With a true ``per_segment`` parameter the state starts afresh at each segment start."""

    def handle(self, packet: Packet) -> list[Packet]:
        segment = packet.header.segment
        if getattr(self.params, "per_segment", False) and segment is not None and segment.start:
            self.start(*self.size)
        events = packet.records
        mask = np.empty(len(events), bool)
        self.keep(events, mask)
        return [self.emit(events[mask], packet.header, "events", packet.header.segment)]

    def keep(self, events: np.ndarray, mask: np.ndarray) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class DenoiseParams:
    """duration_us: support window (us); dv_compatible: memory starts at t = 0 like dv-processing
    (events in the first duration_us of the clock pass), else at minus infinity; per_segment:
    forget the past at each segment start (dataset recordings each have their own time base)."""

    duration_us: int = 2000
    dv_compatible: bool = True
    per_segment: bool = False


@node_type("denoise", STAGE, DenoiseParams)
class Denoise(_Filter):
    """Background-activity filter: keeps events with a neighbour event in the last duration_us."""

    def start(self, width, height):
        self.last = last_times(width, height, self.params.dv_compatible)

    def keep(self, events, mask):
        background_activity(events["t"], events["x"], events["y"], self.last,
                            self.params.duration_us, mask)


@dataclass(frozen=True)
class RefractoryParams:
    """period_us: minimum time (us) between two kept events of one pixel."""

    period_us: int = 1000


@node_type("refractory", STAGE, RefractoryParams)
class Refractory(_Filter):
    """Refractory period: drops events closer than period_us to the pixel's last kept event."""

    def start(self, width, height):
        self.last = last_times(width, height)

    def keep(self, events, mask):
        refractory(events["t"], events["x"], events["y"], self.last, self.params.period_us, mask)


@dataclass(frozen=True)
class PolarityParams:
    """polarity: 1 keeps ON events, 0 keeps OFF events."""

    polarity: int = 1


@node_type("polarity_filter", STAGE, PolarityParams)
class PolarityFilter(_Filter):
    """Keeps the events of one polarity."""

    def keep(self, events, mask):
        np.equal(events["p"], self.params.polarity, out=mask)


@dataclass(frozen=True)
class RoiParams:
    """Region of interest in pixels: top-left corner (x, y), width and height."""

    x: int = 0
    y: int = 0
    width: int = 1
    height: int = 1


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
class HotPixelParams:
    """pixels: flat x0, y0, x1, y1, ... list of pixels to drop; learn_us: if > 0, count events
    during the first learn_us (us) of the stream (passing them all) and then also drop every
    pixel with more than max_count events in that time."""

    pixels: list[int] = field(default_factory=list)
    learn_us: int = 0
    max_count: int = 100


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
class TimeSurfaceParams:
    """tau_us: decay time constant (us); period_us: sampling period (us, 0 = segment ends only);
    merge_polarities: one channel instead of one per polarity; min_value: smallest value sent."""

    tau_us: float = 50_000.0
    period_us: int = 33_000
    merge_polarities: bool = False
    min_value: float = 0.01


@node_type("time_surface", STAGE, TimeSurfaceParams)
class TimeSurface(_Sampled):
    """Global exponential time surface (SAE per polarity), sampled on demand."""

    dtype = "surface"

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
class HatsParams:
    """cell: K, cell side (pixels); rho: surface radius (pixels, 2 rho + 1 <= K); tau_us: decay
    (us); window_us: delta_t, how far back the local memory looks (us); period_us: extra readout
    period (us, 0 = segment ends only). Sironi et al. 2018."""

    cell: int = 10
    rho: int = 3
    tau_us: float = 20_000.0
    window_us: int = 100_000
    period_us: int = 0


@node_type("hats", STAGE, HatsParams)
class Hats(_Sampled):
    """HATS histograms of averaged time surfaces, one feature vector per segment."""

    dtype = "hats"

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
class HotsParams:
    """One HOTS layer (Lagorce et al. 2017). radius: R (pixels); tau_us: decay (us);
    n_prototypes: N; mode: "same" (event's own channel), "all" (every channel) or "merge";
    in_channels: 2 for camera events, previous layer's N for feature events; learn: online
    clustering with the paper's schedule; prototypes: .npy file of a (dim, N) array to start from,
    or a .npz model file holding it under ``hots_prototypes`` (required when learn is false)."""

    radius: int = 2
    tau_us: float = 20_000.0
    n_prototypes: int = 16
    mode: str = "same"
    in_channels: int = 2
    learn: bool = True
    prototypes: str | None = path_field(None)


def load_prototypes(path: str) -> np.ndarray:
    """HOTS prototypes from a .npy array or a model .npz (key ``hots_prototypes``)."""
    if not path.endswith(".npz"):
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as archive:
        if "hots_prototypes" not in archive:
            raise ValueError(f"hots.prototypes: {path} holds no 'hots_prototypes' array")
        return archive["hots_prototypes"]


@node_type("hots", STAGE, HotsParams)
class Hots(_FeatureStage):
    """One HOTS layer: events (or features) in, feature events (t, x, y, f) out."""

    def start(self, width, height):
        p = self.params
        if p.mode not in MODES:
            raise ValueError(f"hots.mode: expected one of {sorted(MODES)}, got {p.mode!r}")
        self.mode = MODES[p.mode]
        dim = surface_dim(p.in_channels, p.radius, self.mode)
        if p.prototypes is not None:
            self.protos = np.ascontiguousarray(load_prototypes(p.prototypes), dtype=np.float64)
            if self.protos.shape != (dim, p.n_prototypes):
                raise ValueError(f"hots.prototypes: {p.prototypes} holds {self.protos.shape}, "
                                 f"expected {(dim, p.n_prototypes)}")
            self.hits = np.ones(p.n_prototypes, np.int64)
        elif not p.learn:
            raise ValueError("hots.prototypes: required when hots.learn is false")
        else:
            self.protos = np.zeros((dim, p.n_prototypes))
            self.hits = np.zeros(p.n_prototypes, np.int64)
        self.memory = hots_map(width, height, p.in_channels, p.radius, self.mode)

    def handle(self, packet: Packet) -> list[Packet]:
        p, events = self.params, packet.records
        segment = packet.header.segment
        if segment is not None and segment.start:  # a new sample: its own time base
            self.memory = hots_map(*self.size, p.in_channels, p.radius, self.mode)
        channel = events["p"] if "p" in events.dtype.names else events["f"]
        out = np.empty(len(events), FEATURE_DTYPE)
        out["t"], out["x"], out["y"] = events["t"], events["x"], events["y"]
        hots_layer(events["t"], events["x"], events["y"], channel, *self.memory, p.radius,
                   p.tau_us, self.mode, self.protos, self.hits, p.learn, out["f"])
        return [self.emit(out, packet.header, "features", segment)]
