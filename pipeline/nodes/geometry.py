"""Geometry stage "scale": a region of a real sensor mapped onto a model's input size.

A DAVIS346 (346 x 260 px) or a DVXplorer (640 x 480 px) sees far more pixels than the shipped
model takes (34 x 34, N-MNIST's size). The scale stage crops a rectangle of the sensor and
down-scales it onto ``out_width`` x ``out_height`` pixels with ``kernels.geometry.scale``:
coordinates ``floor((x - x0) * out_width / width)`` (tonic's ``Downsample`` rule), events landing
on one output pixel merged by integrate-and-fire (``threshold`` events per output event and
polarity), so the output rate stays about that of a sensor of the output size. Its packets carry
the output size in their header, and the config loader checks it against what the next stages
need (the snn stage: its model's size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.geometry import area_threshold, counters, scale_records, scale_tables
from pipeline.core.nodetype import EVENTS, STAGE, ParamError, Params, node_type, param
from pipeline.core.packet import Packet, events_packet
from pipeline.core.stage import Stage, warm_up_packets


@dataclass(frozen=True)
class ScaleParams(Params):
    """The scale stage maps the rectangle of top-left corner (``x0``, ``y0``) and size ``width``
    x ``height`` of the sensor (0: up to the sensor's edge) onto ``out_width`` x ``out_height``
    pixels, emitting one event per ``threshold`` events of an output pixel and polarity."""

    accepts = (EVENTS,)
    emits = (EVENTS,)

    x0: int = param(0, "left column of the region", unit="px", ge=0)
    y0: int = param(0, "top row of the region", unit="px", ge=0)
    width: int = param(0, "region width; 0 = from x0 to the sensor's right edge", unit="px", ge=0)
    height: int = param(0, "region height; 0 = from y0 to the sensor's bottom edge", unit="px",
                        ge=0)
    out_width: int = param(34, "output width (the model's input width)", unit="px", ge=1)
    out_height: int = param(34, "output height (the model's input height)", unit="px", ge=1)
    threshold: int = param(0, "input events of one output pixel and polarity per output event: "
                              "1 keeps every event (tonic's Downsample); 0 = the region's pixels "
                              "per output pixel, about the rate of a sensor of the output size",
                           unit="events", ge=0)

    def check(self):
        for side, out in (("width", "out_width"), ("height", "out_height")):
            if 0 < getattr(self, side) < getattr(self, out):
                raise ParamError(out, f"down-scaling only: must be at most {side} "
                                      f"({getattr(self, side)} px), got {getattr(self, out)}")

    def region(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, width, height) of the region on a ``width`` x ``height`` sensor (px);
        ParamError naming the parameter when it does not fit."""
        w = self.width or width - self.x0
        h = self.height or height - self.y0
        for start, side, extent, axis, out in (("x0", "width", w, width, "out_width"),
                                               ("y0", "height", h, height, "out_height")):
            origin = getattr(self, start)
            if origin >= axis:
                raise ParamError(start, f"the sensor is {width} x {height} px: {start} must be "
                                        f"below {axis}, got {origin}")
            if origin + extent > axis:
                raise ParamError(side, f"the region ends at {start} + {side} = {origin + extent} "
                                       f"px, beyond the {width} x {height} px sensor")
            if extent < getattr(self, out):
                raise ParamError(out, f"down-scaling only: the region is {extent} px along "
                                      f"{side}, got {out} = {getattr(self, out)}")
        return self.x0, self.y0, w, h

    def output_size(self, size):
        if size is not None:
            self.region(*size)
        return self.out_width, self.out_height


@node_type("scale", STAGE, ScaleParams)
class Scale(Stage):
    """Crops a region of the sensor and down-scales it onto the model's input size."""

    def __init__(self, name: str, params: ScaleParams):
        super().__init__(name)
        self.params = params
        self.seq = 0
        self.size: tuple[int, int] | None = None

    def _start(self, width: int, height: int, stream: str) -> None:
        p = self.params
        try:
            self.region = p.region(width, height)
        except ParamError as exc:
            raise ValueError(f"{self.name}: {exc} (packets of {stream!r})") from None
        self.threshold = p.threshold or area_threshold(*self.region[2:], p.out_width, p.out_height)
        self.counts = counters(p.out_width, p.out_height)
        self.tables = scale_tables(*self.region[2:], p.out_width, p.out_height)
        self.size = (width, height)

    def warm_up(self) -> None:
        """Run the kernel on ``warm_up_packets`` so numba loads what real packets call."""
        for packet in warm_up_packets(EVENTS, 1, 1):
            events = packet.records
            scale_records(events, 0, 0, *scale_tables(1, 1, 1, 1), 1, counters(1, 1),
                          np.empty(len(events), events.dtype))

    def process(self, packet: Packet) -> list[Packet]:
        header, events = packet.header, packet.records
        if self.size != (header.width, header.height):
            self._start(header.width, header.height, header.stream)
        elif header.segment is not None and header.segment.start:
            self.counts[:] = 0  # a new recording: partial counts belong to the previous one
        out = np.empty(len(events), events.dtype)
        x0, y0 = self.region[:2]
        out = out[:scale_records(events, x0, y0, *self.tables, self.threshold, self.counts, out)]
        p = self.params
        self.seq += 1
        return [events_packet(self.name, self.seq - 1, out, p.out_width, p.out_height,
                              header.segment)]
