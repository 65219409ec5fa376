"""The live viewer: event frame, time surface, output neurons, current decision and stream rates.

``Viewer.feed(packet)`` takes every kind of packet a graph carries and only accumulates (numba:
``kernels.frames`` for the decaying ON/OFF frame, ``kernels.timesurface`` for the surface), so it
keeps up with high event rates; ``Viewer.maybe_draw()`` redraws when a new frame slot of
``1 / fps`` seconds has begun on the viewer's clock, at most once per slot. Slots that pass
without a draw are counted as dropped frames. On the wall clock a draw also waits as long as the
previous draw took, so drawing never takes more than about half the time: the viewer drops
frames rather than falling behind its input.

Clocks: ``"wall"`` (live viewing: host monotonic time) or ``"stream"`` (sensor time of the newest
event: one frame per 1/fps of recording, for videos made from files as fast as they can be read).

Panels: events (ON/OFF colours over a dark background, exponential decay ``tau_us``), the global
time surface ``exp(-(T - t_last) / surface_tau_us)`` of the newest event per pixel, the output
neurons' membrane potentials as bars labelled with their spike counts in the current segment,
and a text panel with the current decision (class, rule, margin, latency), events/s in stream
and wall time, sequence gaps and frames drawn/dropped.

Headless output with ``save``: ``.png`` (the last frame, at close), ``.gif`` (Pillow) or ``.mp4``
(needs ffmpeg on PATH); a video gets the figure at every draw, at most ``max_frames`` frames.
Drawing blits: the static parts (titles, axes) are redrawn only when they change.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import threading
import time

import numpy as np

from kernels import frames as kf
from kernels.timesurface import sae_new, sample_surface
from pipeline.core.events import JSON_DTYPE_NAME
from pipeline.core.files import make_parent
from pipeline.core.packet import Packet

log = logging.getLogger(__name__)

BACKGROUND = np.array([20.0, 20.0, 28.0])  # RGB 0..255
ON_COLOUR = np.array([80.0, 220.0, 90.0])
OFF_COLOUR = np.array([235.0, 60.0, 70.0])
SAVE_SUFFIXES = (".png", ".gif", ".mp4")
CLOCKS = ("wall", "stream")


class FramePacer:
    """Frame slots of ``1 / fps`` s on a clock: ``due(now)`` is True at most once per slot.

    Slots that began and ended without a draw count as ``dropped``. ``hold(seconds)`` forbids
    drawing for that long (the wall clock's "never more than half the time drawing" rule).
    """

    def __init__(self, fps: float):
        if not 0 < fps <= 120:
            raise ValueError(f"fps must be within (0, 120], got {fps}")
        self.period = 1.0 / fps
        self.slot: int | None = None
        self.not_before = -math.inf
        self.drawn = 0
        self.dropped = 0

    def due(self, now: float) -> bool:
        slot = math.floor(now / self.period)
        if self.slot is not None and slot <= self.slot:
            return False
        if now < self.not_before:
            return False
        if self.slot is not None:
            self.dropped += slot - self.slot - 1
        self.slot = slot
        self.drawn += 1
        return True

    def hold(self, seconds: float) -> None:
        self.not_before = time.monotonic() + seconds


class Viewer:
    """Accumulates packets and draws the panels (see the module docstring)."""

    def __init__(self, width: int = 0, height: int = 0, fps: float = 30.0, tau_us: float = 30_000.0,
                 surface_tau_us: float = 50_000.0, save: str = "", clock: str = "wall",
                 max_frames: int = 300, title: str = "evpipe"):
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
        if tau_us <= 0 or surface_tau_us <= 0:
            raise ValueError("tau_us and surface_tau_us must be positive (us)")
        suffix = os.path.splitext(save)[1].lower()
        if save and suffix not in SAVE_SUFFIXES:
            raise ValueError(f"save: cannot write {suffix or 'a file without suffix'!r}; use one of {SAVE_SUFFIXES}")
        if suffix == ".mp4" and shutil.which("ffmpeg") is None:
            raise ValueError("save: .mp4 needs ffmpeg on PATH; use .gif or .png instead")
        self.fps, self.tau_us, self.surface_tau_us = fps, float(tau_us), float(surface_tau_us)
        self.save, self.suffix, self.clock, self.max_frames = save, suffix, clock, max_frames
        self.title = title
        self.pacer = FramePacer(fps)
        self.width, self.height = width, height
        self.acc = self.t0 = self.sae = None
        if width and height:
            self._size(width, height)
        # stream state
        self.events = 0
        self.packets = 0
        self.gaps = 0
        self._next_seq: dict[str, int] = {}
        self.t_now: int | None = None  # newest event time (us)
        self.t_first: int | None = None  # first event time (us)
        self.potentials = np.zeros(0)
        self.counts = np.zeros(0, np.int64)
        self.class_names: dict[int, str] = {}
        self.decision: dict | None = None
        self.decisions = 0
        self._rate = (time.monotonic(), 0, None)  # (wall, events, t_now) at the last draw
        self.rates = (0.0, 0.0)  # events/s over the last draw interval: (stream time, wall time)
        # drawing state
        self.figure = None
        self.interactive = False  # a window is shown (set when the figure is built)
        self.video = Video()

    # ---- accumulation --------------------------------------------------------------------
    def _size(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.acc, self.t0 = kf.frame_new(width, height)
        self.sae = sae_new(width, height, channels=1)  # newest event time per pixel, both polarities

    def feed(self, packet: Packet) -> None:
        """Take one packet: events, "spikes" records of the snn stage, or decision records."""
        header = packet.header
        if packet.is_eos:
            return
        expected = self._next_seq.get(header.stream)
        if expected is not None and header.seq > expected:
            self.gaps += header.seq - expected
        self._next_seq[header.stream] = max(expected or 0, header.seq + 1)
        self.packets += 1
        if header.dtype == JSON_DTYPE_NAME:
            self._decisions(packet.records)
        elif header.dtype == "spikes":
            self._spikes(packet)
        elif packet.records.dtype.names is not None and "p" in packet.records.dtype.names:
            self._events(packet)

    def _events(self, packet: Packet) -> None:
        header, events = packet.header, packet.records
        if self.acc is None:
            if header.width <= 0 or header.height <= 0:
                raise ValueError(f"viewer: packets of {header.stream!r} carry no sensor size; "
                                 "give width and height")
            self._size(header.width, header.height)
        if not len(events):
            return
        if self.t_now is None:
            self.t_first = int(events["t"][0])
            self.t0[0] = float(self.t_first)
        kf.accumulate(self.acc, self.t0, self.sae[0], events["t"], events["x"], events["y"],
                      events["p"], self.tau_us)
        self.events += len(events)
        self.t_now = max(self.t_now or 0, int(events["t"][-1]))

    def _spikes(self, packet: Packet) -> None:
        records = packet.records
        segment = packet.header.segment
        samples = records[records["kind"] == 1]
        if segment is not None and segment.start:
            self.counts = np.zeros_like(self.counts)
        if len(samples):
            self.potentials = samples["v"].astype(np.float64)
            if len(self.counts) != len(samples):
                self.counts = np.zeros(len(samples), np.int64)
            spikes = records[(records["kind"] == 0) & (records["layer"] == samples["layer"][0])]
            self.counts += np.bincount(spikes["neuron"], minlength=len(self.counts))[:len(self.counts)]

    def _decisions(self, records: list) -> None:
        for record in records:
            if isinstance(record, dict) and "class" in record:
                self.decision = record
                self.decisions += 1
                self.class_names[int(record["class"])] = str(record.get("class_name"))

    # ---- drawing -------------------------------------------------------------------------
    def now(self) -> float:
        """The viewer's clock in seconds."""
        if self.clock == "wall":
            return time.monotonic()
        return (self.t_now or 0) / 1e6

    def maybe_draw(self) -> bool:
        """Draw when a new frame slot has begun; True when a frame was drawn."""
        if self.acc is None or not self.pacer.due(self.now()):
            return False
        start = time.monotonic()
        self.draw()
        if self.clock == "wall":
            self.pacer.hold(time.monotonic() - start)
        return True

    def frame_rgb(self) -> np.ndarray:
        """The event panel's image (height x width x 3, uint8) at the newest event time."""
        out = np.empty((self.height, self.width, 3), np.uint8)
        scale = kf.decay_scale(self.t0, self.t_now or 0, self.tau_us)
        kf.render(self.acc, scale, BACKGROUND, ON_COLOUR, OFF_COLOUR, out)
        return out

    def surface(self) -> np.ndarray:
        out = np.empty(self.sae.shape, np.float64)
        sample_surface(self.sae, self.t_now or 0, self.surface_tau_us, out)
        return out[0]

    def _build(self) -> None:
        import matplotlib

        self.interactive = not self.save and threading.current_thread() is threading.main_thread() \
            and matplotlib.get_backend().lower() != "agg"
        if self.interactive:
            import matplotlib.pyplot as plt
            self.figure = plt.figure(figsize=(10, 6.5))
            plt.show(block=False)
        else:
            if not self.save:
                log.warning("viewer: no window can be shown here (backend %s, thread %s); drawing headless",
                            matplotlib.get_backend(), threading.current_thread().name)
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            self.figure = Figure(figsize=(8, 5.4), dpi=80)
            FigureCanvasAgg(self.figure)
        fig = self.figure
        fig.suptitle(self.title)
        grid = fig.add_gridspec(2, 2, height_ratios=[3, 2])
        ax_events, ax_surface = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        self.ax_bars, ax_text = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
        ax_events.set_title("events (ON green, OFF red)", fontsize=9)
        ax_surface.set_title(f"time surface, tau {self.surface_tau_us / 1e3:g} ms", fontsize=9)
        self.image = ax_events.imshow(self.frame_rgb(), interpolation="nearest", animated=True)
        self.surface_image = ax_surface.imshow(self.surface(), vmin=0, vmax=1, cmap="magma",
                                               interpolation="nearest", animated=True)
        for ax in (ax_events, ax_surface):
            ax.set_xticks([]), ax.set_yticks([])
        self.ax_bars.set_title("output neurons: potential (bar), spikes (label)", fontsize=9)
        self.ax_bars.set_ylim(-0.2, 1.5)
        self.bars, self.bar_labels, self.tick_names = [], [], ()
        ax_text.axis("off")
        self.text = ax_text.text(0, 1, "", va="top", family="monospace", fontsize=8,
                                 transform=ax_text.transAxes, animated=True)
        self.background = None

    def _layout_bars(self) -> bool:
        """Create or rescale the bars when the neurons, their names or their range changed;
        True when the static background must be redrawn."""
        n, ax = len(self.potentials), self.ax_bars
        names = tuple(self.class_names.get(i, str(i)) for i in range(n))
        low, high = ax.get_ylim()
        v_low, v_high = (float(np.min(self.potentials)), float(np.max(self.potentials))) if n else (0, 0)
        changed = False
        if len(self.bars) != n:
            for artist in self.bars + self.bar_labels:
                artist.remove()
            self.bars = list(ax.bar(np.arange(n), np.zeros(n), color="#4a90d9"))
            self.bar_labels = [ax.text(i, 0, "", ha="center", va="bottom", fontsize=7) for i in range(n)]
            for artist in self.bars + self.bar_labels:
                artist.set_animated(True)
            ax.set_xticks(np.arange(n))
            changed = True
        if names != self.tick_names:
            ax.set_xticklabels(names, fontsize=7)
            self.tick_names, changed = names, True
        if v_low < low or v_high > high:
            ax.set_ylim(min(low, 1.5 * v_low), max(high, 1.5 * v_high))
            changed = True
        return changed

    def _update_bars(self) -> None:
        for bar, label, v, c in zip(self.bars, self.bar_labels, self.potentials, self.counts):
            bar.set_height(v)
            label.set_position((bar.get_x() + bar.get_width() / 2, max(v, 0)))
            label.set_text(str(int(c)))

    def status_text(self) -> str:
        """The text panel: decision, rates, drops."""
        lines = []
        d = self.decision
        if d is None:
            lines.append("decision: none yet")
        else:
            truth = d.get("label")
            verdict = "" if truth is None else ("  (right)" if str(truth) == str(d.get("class_name")) else f"  (true {truth})")
            lines += [f"decision: {d.get('class_name')}{verdict}",
                      f"  rule {d.get('rule')}, margin {float(d.get('margin', 0)):.3g}",
                      f"  decoder {float(d.get('decoder_ns', 0)) / 1e3:.0f} us, after {d.get('events')} events",
                      f"  segment {d.get('segment')}  ({self.decisions} decisions)"]
        stream_rate, wall_rate = self.rates
        lines += ["",
                  f"events/s: {stream_rate:,.0f} (sensor time)",
                  f"          {wall_rate:,.0f} (wall time)",
                  f"events {self.events:,}  packets {self.packets:,}",
                  f"drops: {self.gaps:,} packets (seq gaps)",
                  f"frames: {self.pacer.drawn:,} drawn, {self.pacer.dropped:,} dropped",
                  f"t = {((self.t_now or 0) - (self.t_first or 0)) / 1e6:.3f} s since the first event"]
        return "\n".join(lines)

    def _update_rates(self) -> None:
        wall, events, t_prev = self._rate
        now = time.monotonic()
        new = self.events - events
        stream_span = ((self.t_now or 0) - t_prev) / 1e6 if t_prev is not None else 0.0
        self.rates = (new / stream_span if stream_span > 0 else 0.0, new / max(now - wall, 1e-9))
        self._rate = (now, self.events, self.t_now)

    def draw(self) -> None:
        """Redraw the panels now: the static parts only when they changed (blitting), then the
        images, bars and text; a saved video gets the frame."""
        if self.figure is None:
            self._build()
        self._update_rates()
        self.image.set_data(self.frame_rgb())
        self.surface_image.set_data(self.surface())
        if self._layout_bars() or self.background is None:
            self.figure.canvas.draw()  # animated artists are skipped: this is the background
            self.background = self.figure.canvas.copy_from_bbox(self.figure.bbox)
        else:
            self.figure.canvas.restore_region(self.background)
        self._update_bars()
        self.text.set_text(self.status_text())
        for artist in [self.image, self.surface_image, self.text] + self.bars + self.bar_labels:
            self.figure.draw_artist(artist)
        if self.interactive:
            self.figure.canvas.blit(self.figure.bbox)
            self.figure.canvas.flush_events()
        if self.suffix in (".gif", ".mp4") and self.video.count < self.max_frames:
            self.video.add(self.pixels())

    def pixels(self) -> np.ndarray:
        """The figure as drawn: RGB uint8 (height x width x 3)."""
        return np.asarray(self.figure.canvas.buffer_rgba())[..., :3].copy()

    def close(self) -> None:
        """Draw the final frame and write the output file, if any."""
        if self.acc is None:
            if self.save:
                log.warning("viewer: no events arrived; %s not written", self.save)
            return
        self.draw()
        if self.save:
            make_parent(self.save)
        if self.suffix == ".png":
            from PIL import Image
            Image.fromarray(self.pixels()).save(self.save)
        elif self.suffix in (".gif", ".mp4"):
            self.video.write(self.save, self.fps)


class Video:
    """Frames kept for a saved video: .gif (Pillow, adaptive palette) or .mp4 (ffmpeg, H.264)."""

    def __init__(self):
        self.frames: list = []

    @property
    def count(self) -> int:
        return len(self.frames)

    def add(self, rgb: np.ndarray) -> None:
        from PIL import Image
        self.frames.append(Image.fromarray(rgb).quantize(colors=255))

    def write(self, path: str, fps: float) -> None:
        if path.lower().endswith(".gif"):
            first, *rest = self.frames
            first.save(path, save_all=True, append_images=rest, duration=max(1, round(1000 / fps)), loop=0)
            return
        width, height = self.frames[0].size
        command = [shutil.which("ffmpeg"), "-y", "-loglevel", "error", "-f", "rawvideo",
                   "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
                   "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-pix_fmt", "yuv420p", path]
        data = b"".join(frame.convert("RGB").tobytes() for frame in self.frames)
        subprocess.run(command, input=data, check=True)
