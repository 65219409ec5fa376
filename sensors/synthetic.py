"""A deterministic synthetic event camera: moving discs seen by an ideal DVS, plus noise.

``shapes`` discs of radius ``radius`` px bounce inside the sensor at ``speed`` px/s (each with
its own direction, drawn from ``seed``). Events fall on the disc edges: ON on the leading half
(the edge moving outwards), OFF on the trailing half, so the ON fraction is about 0.5. A
fraction ``noise`` of the events are uniform background activity with random polarity. The event
rate is exact: ``rate`` events per second of sensor time, cut in slices of ``slice_us``; each
slice is generated from its own ``(seed, slice index)`` random stream, so any time window is
reproducible on its own and two runs with the same parameters give identical events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from numba import njit

from pipeline.core.events import EVENT_DTYPE
from pipeline.core.packet import Packet, Packetizer, events_packet
from pipeline.core.stage import Source
from sensors.replay import Pacer


@dataclass(frozen=True)
class Scene:
    width: int = 320
    height: int = 240
    rate: float = 1e6  # events per second of sensor time
    speed: float = 200.0  # px/s
    shapes: int = 3
    radius: float = 20.0  # px
    noise: float = 0.05  # fraction of events that are background noise
    seed: int = 0
    slice_us: int = 1000


def bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    """Positions moving freely, folded back into [low, high] (a triangle wave)."""
    span = high - low
    folded = np.mod(position - low, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


ANGLES = 2 * np.pi * np.arange(256) / 256
UNIT = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)  # 256 edge directions


@njit(cache=True, nogil=True)
def _fill(out_t, out_x, out_y, out_p, start, slice_us, state, centre, moving, r, width, height,
          noise16, unit):
    """Events of one slice; ``state`` seeds a splitmix64 stream (one 64-bit word per event);
    ``unit`` holds the 256 edge directions."""
    count = len(out_t)
    shapes = len(centre)
    for i in range(count):
        state += np.uint64(0x9E3779B97F4A7C15)
        z = state
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        out_t[i] = start + (i * slice_us) // count
        if (z >> np.uint64(48)) < noise16:
            out_x[i] = (z & np.uint64(0xFFFF)) % width
            out_y[i] = ((z >> np.uint64(16)) & np.uint64(0xFFFF)) % height
            out_p[i] = (z >> np.uint64(32)) & np.uint64(1)
            continue
        k = int((z & np.uint64(0xFFFF)) % shapes)
        a = int((z >> np.uint64(16)) & np.uint64(0xFF))
        nx, ny = unit[a, 0], unit[a, 1]
        out_x[i] = min(max(round(centre[k, 0] + r * nx), 0), width - 1)
        out_y[i] = min(max(round(centre[k, 1] + r * ny), 0), height - 1)
        out_p[i] = 1 if moving[k, 0] * nx + moving[k, 1] * ny > 0 else 0


def scene_slice(scene: Scene, index: int) -> np.ndarray:
    """The events of slice ``index`` (times index*slice_us .. (index+1)*slice_us), sorted by t.

    Times are evenly spaced in the slice; the discs are placed where they are at the middle of
    the slice (at 200 px/s they move 0.2 px in 1 ms). Each event draws one splitmix64 word
    seeded by (seed, index): disc and edge angle, or noise position and polarity.
    """
    start = index * scene.slice_us
    count = int(round(scene.rate * (start + scene.slice_us) / 1e6)) - int(round(scene.rate * start / 1e6))
    layout = np.random.default_rng([scene.seed, 1 << 30])  # the same discs for every slice
    origin = layout.uniform([0, 0], [scene.width, scene.height], (scene.shapes, 2))
    heading = layout.uniform(0, 2 * np.pi, scene.shapes)
    velocity = scene.speed * np.stack([np.cos(heading), np.sin(heading)], axis=1)  # px/s
    r = min(scene.radius, (min(scene.width, scene.height) - 1) / 2)
    low, high = np.array([r, r]), np.array([scene.width - 1 - r, scene.height - 1 - r])
    middle = (start + scene.slice_us / 2) / 1e6
    centre = bounce(origin + velocity * middle, low, high)
    moving = bounce(origin + velocity * (middle + 1e-3), low, high) - centre  # direction now
    seed = np.random.default_rng([scene.seed, index]).integers(0, 1 << 63, dtype=np.uint64)
    out = np.empty(count, EVENT_DTYPE)
    _fill(out["t"], out["x"], out["y"], out["p"], start, scene.slice_us, seed, centre, moving, r,
          scene.width, scene.height, np.uint64(scene.noise * 65536), UNIT)
    return out


def scene_events(scene: Scene, duration_us: int = 0) -> Iterator[np.ndarray]:
    """Slices of the scene from t = 0 for ``duration_us`` (0: forever)."""
    index = 0
    while not duration_us or index * scene.slice_us < duration_us:
        events = scene_slice(scene, index)
        yield events[events["t"] < duration_us] if duration_us else events
        index += 1


class SyntheticSource(Source):
    """The synthetic scene as a packet source, paced at ``speed_factor`` x real time (0: flat out);
    each packet's ``origin_ns`` is its emission time (host ns, ``time.time_ns()``)."""

    def __init__(self, name: str, scene: Scene, duration_us: int = 0, speed_factor: float = 1.0,
                 packet_us: int = 1000, packet_events: int = 10_000):
        super().__init__(name)
        self.scene, self.duration_us = scene, duration_us
        self.pacer = Pacer(speed_factor, lambda: self.stopping)
        self.packetizer = Packetizer(packet_us, packet_events)

    def packets(self) -> Iterator[Packet]:
        chunks = scene_events(self.scene, self.duration_us)
        for chunk in chunks:
            for cut in self.packetizer.push(chunk):
                if self.stopping:
                    return
                self.pacer.wait_until(int(cut["t"][-1]))
                yield self._packet(cut)
        for cut in self.packetizer.flush():
            yield self._packet(cut)

    def _packet(self, events: np.ndarray) -> Packet:
        return events_packet(self.name, 0, events, self.scene.width, self.scene.height,
                             origin_ns=time.time_ns())
