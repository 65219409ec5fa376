"""The live viewer: event frame, time surface, output neurons, current decision and stream rates.

``Viewer.feed(packet)`` takes every kind of packet a graph carries and only accumulates (numba:
``kernels.frames`` for the decaying ON/OFF frame, ``kernels.timesurface`` for the surface), so it
keeps up with high event rates; ``Viewer.maybe_draw()`` redraws when a new frame slot of
``1 / fps`` seconds has begun on the viewer's clock, at most once per slot, and once more when a
decision about the events on screen arrives. Slots that pass without a draw are counted as
dropped frames. On the wall clock a draw also waits as long as the previous draw took, so drawing
never takes more than about half the time: the viewer drops frames rather than falling behind
its input.

Clocks: ``"wall"`` (live viewing: host monotonic time) or ``"stream"`` (sensor time of the newest
event: one frame per 1/fps of recording, for videos made from files as fast as they can be read).

Segments: an event packet that starts a segment (a replayed recording, each with its own time
base) or brings another sensor size starts the panels afresh: event frame, time surface, stream
clock and the time shown. Without that, the recordings of a dataset, whose clocks all start near
0, would pile up in one frame while the stream clock stood still at the end of the first one.

Panels: events (ON/OFF colours over a dark background, exponential decay ``tau_us``; where both
polarities were recent the colours add, as the legend says; axes in sensor pixels), the global
time surface ``exp(-(T - t_last) / surface_tau_us)`` of the newest event per pixel, the output
neurons' membrane potentials as bars labelled with their spike counts in the current segment
(at most the last ``SPIKE_WINDOW_US`` of it, so an unmarked live stream shows recent activity),
and a text panel with the current decision (class, rule, margin, time in the decoder), events/s
in stream and wall time, sequence gaps and frames drawn/dropped. The current decision is also
written over the event panel while the events it was made on are there (``on_screen``). A
decision with no class (``class_name`` null: the decoder abstained) shows as "no decision".

The figure follows the sensor's aspect: the image panels get ``PANEL_PX`` pixels on their short
side (more for wide sensors, up to ``PANEL_MAX_PX`` on the long one).

Headless output with ``save``: ``.png`` (only the last frame is drawn, at close), ``.gif``
(Pillow) or ``.mp4`` (needs ffmpeg on PATH); a video gets the figure at every draw, at most
``max_frames`` frames. Drawing blits: the static parts (titles, axes) are redrawn only when they
change.
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
FADE = math.log(1 / kf.FAINT)  # an event has faded to the background after FADE * tau_us
SPIKE_WINDOW_US = 1_000_000  # the bars count the output spikes of at most this much sensor time
PANEL_PX, PANEL_MAX_PX = 300, 560  # image panel sides at 80 dots per inch (short side, long side)
DPI = 80


def overlap_colour() -> np.ndarray:
    """The colour of a pixel where ON and OFF events are both fully recent (uint8 RGB)."""
    out = np.empty((1, 1, 3), np.uint8)
    kf.render(np.ones((2, 1, 1)), 1.0, BACKGROUND, ON_COLOUR, OFF_COLOUR, out)
    return out[0, 0]


def panel_size(width: int, height: int) -> tuple[float, float]:
    """Width and height (px at ``DPI``) of an image panel of a ``width`` x ``height`` sensor:
    ``PANEL_PX`` on the short side, the long side in proportion, at most ``PANEL_MAX_PX``."""
    aspect = width / height
    long_side = min(PANEL_MAX_PX, PANEL_PX * max(aspect, 1 / aspect))
    return (long_side, long_side / aspect) if aspect >= 1 else (long_side * aspect, long_side)


class FramePacer:
    """Frame slots of ``1 / fps`` s on a clock: ``due(now)`` is True at most once per slot.

    Slots that began and ended without a draw count as ``dropped``; the viewer counts ``drawn``.
    ``hold(seconds)`` forbids drawing for that long (the wall clock's "never more than half the
    time drawing" rule); ``restart()`` forgets the slot, for a stream clock that starts again.
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
        return True

    def hold(self, seconds: float) -> None:
        self.not_before = time.monotonic() + seconds

    def restart(self) -> None:
        self.slot = None


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
        # stream state
        self.events = 0
        self.packets = 0
        self.gaps = 0
        self._next_seq: dict[str, int] = {}
        self.segment = None  # segment marker of the newest event packet (None: unmarked stream)
        self.segment_names: set[str] = set()  # names of the event segments seen
        self.t_now: int | None = None  # newest event time of the segment (us)
        self.t_first: int | None = None  # its first event time (us)
        self.potentials = np.zeros(0)
        self.spike_t = np.zeros(0, np.int64)  # output spikes of the current segment (us) ...
        self.spike_neuron = np.zeros(0, np.int64)  # ... and their neurons
        self.class_names: dict[int, str] = {}
        self.decision: dict | None = None
        self.decisions = 0
        self._fresh = False  # a decision about the events on screen arrived since the last draw
        self._seen_until = 0  # an unmarked decision's object is in view until this time (us)
        self._object_open = False  # ... and output spikes may still extend it
        self._rate = (time.monotonic(), 0, None)  # (wall, events, t_now) at the last draw
        self.rates = (0.0, 0.0)  # events/s over the last draw interval: (stream time, wall time)
        # drawing state
        self.figure = None
        self.interactive = False  # a window is shown (set when the figure is built)
        self.video = Video()
        self.width, self.height = width, height
        self.acc = self.t0 = self.sae = None
        if width and height:
            self._size(width, height)

    # ---- accumulation --------------------------------------------------------------------
    def _size(self, width: int, height: int) -> None:
        """Start the panels afresh for a ``width`` x ``height`` sensor: a new time base."""
        self.width, self.height = width, height
        self.acc, self.t0 = kf.frame_new(width, height)
        self.sae = sae_new(width, height, channels=1)  # newest event time per pixel, both polarities
        self.t_now = self.t_first = None
        self._rate = (time.monotonic(), self.events, None)
        self.pacer.restart()
        if self.figure is not None:
            for image in (self.image, self.surface_image):
                image.set_extent((-0.5, width - 0.5, height - 0.5, -0.5))
            self.background = None  # the axes changed

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
        segment = header.segment
        sized = header.width > 0 and header.height > 0
        if self.acc is None and not sized:
            raise ValueError(f"viewer: packets of {header.stream!r} carry no sensor size; "
                             "give width and height")
        if (sized and (header.width, header.height) != (self.width, self.height)) or (
                segment is not None and segment.start):
            self._size(*((header.width, header.height) if sized else (self.width, self.height)))
        if segment is not None:
            self.segment = segment
            if segment.name:
                self.segment_names.add(segment.name)
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
            self.spike_t, self.spike_neuron = self.spike_t[:0], self.spike_neuron[:0]
        if len(samples):
            self.potentials = samples["v"].astype(np.float64)
            spikes = records[(records["kind"] == 0) & (records["layer"] == samples["layer"][0])]
            t_end = int(samples["t"][-1])
            keep = self.spike_t > t_end - SPIKE_WINDOW_US
            self.spike_t = np.concatenate([self.spike_t[keep], spikes["t"]])
            self.spike_neuron = np.concatenate([self.spike_neuron[keep], spikes["neuron"]])
            self._follow_object(spikes["t"])

    def _follow_object(self, spike_t: np.ndarray) -> None:
        """Extend the time the current decision's object is in view by the output spikes that
        follow it without a silence longer than ``FADE * tau_us``; the first longer silence
        means it has gone."""
        if not self._object_open:
            return
        fade = FADE * self.tau_us
        after = spike_t[spike_t >= self.decision["t"]]
        gaps = np.diff(after, prepend=self._seen_until - fade) > fade
        if gaps.any():
            after, self._object_open = after[:int(np.argmax(gaps))], False
        if len(after):
            self._seen_until = int(after[-1] + fade)

    @property
    def counts(self) -> np.ndarray:
        """Output spikes per neuron in the current segment, over at most ``SPIKE_WINDOW_US``."""
        n = len(self.potentials)
        return np.bincount(self.spike_neuron[self.spike_neuron < n], minlength=n)

    def _decisions(self, records: list) -> None:
        for record in records:
            if isinstance(record, dict) and "class" in record:
                self.decision = record
                self.decisions += 1
                if record["class"] is not None and record.get("class_name") is not None:
                    self.class_names[int(record["class"])] = str(record["class_name"])
                t = record.get("t")
                self._object_open = isinstance(t, int)
                self._seen_until = t + FADE * self.tau_us if self._object_open else 0
                self._fresh = self.on_screen()

    def on_screen(self) -> bool:
        """Whether the events the current decision was made on are on the event panel: when the
        decision names a segment of the event stream (a replayed recording), while that segment
        is shown; otherwise (a live stream, objects found by the decoder), from its time t in the
        shown segment until its object's events have faded: ``FADE * tau_us`` after t, or after
        the last of the output spikes that follow t with no silence longer than that (the
        network keeps firing while the object is in view, and stops when it goes)."""
        d = self.decision
        if d is None or self.t_now is None:
            return False
        name = d.get("segment_name")
        if name in self.segment_names:
            return self.segment is not None and self.segment.name == name
        t = d.get("t")
        if not isinstance(t, int) or t < self.t_first:
            return False
        return self.t_now <= self._seen_until

    @staticmethod
    def decided(d: dict) -> str:
        """The class a decision names, or "no decision" when the decoder abstained."""
        name = d.get("class_name")
        return "no decision" if name is None or d.get("class") is None else str(name)

    # ---- drawing -------------------------------------------------------------------------
    def now(self) -> float:
        """The viewer's clock in seconds."""
        if self.clock == "wall":
            return time.monotonic()
        return (self.t_now or 0) / 1e6

    def maybe_draw(self) -> bool:
        """Draw when a new frame slot has begun, or a decision about the events on screen has
        arrived; True when a frame was drawn. A still (.png) is drawn only at close."""
        if self.acc is None or self.suffix == ".png":
            return False
        if not self.pacer.due(self.now()) and not self._fresh:
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
        """The figure, laid out in pixels: two image panels of the sensor's aspect side by side
        (events with its legend below, time surface), output neurons and status below them."""
        import matplotlib
        from matplotlib.patches import Patch

        panel_w, panel_h = panel_size(self.width, self.height)
        left, gap, top, below, bottom = 45, 45, 55, 45, 200  # margins (px)
        fig_w, fig_h = 2 * panel_w + left + gap + 20, top + panel_h + below + bottom
        self.interactive = not self.save and threading.current_thread() is threading.main_thread() \
            and matplotlib.get_backend().lower() != "agg"
        if self.interactive:
            import matplotlib.pyplot as plt
            self.figure = plt.figure(figsize=(fig_w / DPI, fig_h / DPI))
            plt.show(block=False)
        else:
            if not self.save:
                log.warning("viewer: no window can be shown here (backend %s, thread %s); drawing headless",
                            matplotlib.get_backend(), threading.current_thread().name)
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            self.figure = Figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)
            FigureCanvasAgg(self.figure)
        fig = self.figure

        def box(x, y, w, h):  # pixels from the bottom left -> figure fractions
            return [x / fig_w, y / fig_h, w / fig_w, h / fig_h]

        fig.suptitle(self.title)
        ax_events = fig.add_axes(box(left, bottom + below, panel_w, panel_h))
        ax_surface = fig.add_axes(box(left + panel_w + gap, bottom + below, panel_w, panel_h))
        self.ax_bars = fig.add_axes(box(left, 30, panel_w, bottom - 75))
        ax_text = fig.add_axes(box(left + panel_w + gap, 10, panel_w, bottom - 25))
        ax_events.set_title(f"events, tau {self.tau_us / 1e3:g} ms (sensor px)", fontsize=9)
        ax_surface.set_title(f"time surface, tau {self.surface_tau_us / 1e3:g} ms", fontsize=9)
        self.image = ax_events.imshow(self.frame_rgb(), interpolation="nearest", animated=True)
        self.surface_image = ax_surface.imshow(self.surface(), vmin=0, vmax=1, cmap="magma",
                                               interpolation="nearest", animated=True)
        ax_events.tick_params(labelsize=7, length=2, pad=1)
        ax_surface.set_xticks([]), ax_surface.set_yticks([])
        colours = [ON_COLOUR / 255, OFF_COLOUR / 255, overlap_colour() / 255]
        labels = ["ON", "OFF", "ON and OFF: colours add"]
        self.legend = ax_events.legend(
            [Patch(color=c) for c in colours], labels, loc="upper center", ncol=3, fontsize=7,
            bbox_to_anchor=(0.5, -0.06), frameon=False, handlelength=1, columnspacing=1)
        self.overlay = ax_events.text(0.02, 0.98, "", transform=ax_events.transAxes, va="top",
                                      fontsize=14, weight="bold", color="white", animated=True,
                                      visible=False,
                                      bbox=dict(facecolor="black", alpha=0.7, linewidth=2))
        self.ax_bars.set_title("output neurons: potential (bar), spikes in segment (top)", fontsize=9)
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
            top = ax.get_xaxis_transform()  # x in data, y in axes fractions: along the top edge
            self.bar_labels = [ax.text(i, 0.98, "", ha="center", va="top", fontsize=7, transform=top)
                               for i in range(n)]
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
            label.set_text(str(int(c)))

    def _update_overlay(self) -> None:
        """The current decision over the event panel while its events are there; the frame of
        the box is green when it names the true label, red when not, grey when unknown."""
        d = self.decision
        shown = self.on_screen()
        self.overlay.set_visible(shown)
        if not shown:
            return
        truth, decided = d.get("label"), self.decided(d)
        colour = "grey" if truth is None else ("#50dc5a" if str(truth) == decided else "#eb3c46")
        self.overlay.set_text(decided if truth is None else f"{decided}  (true {truth})")
        self.overlay.get_bbox_patch().set_edgecolor(colour)

    def status_text(self) -> str:
        """The text panel: segment, decision, rates, drops."""
        lines = []
        segment = self.segment
        if segment is not None:
            label = "" if segment.label is None else f", label {segment.label}"
            lines += [f"segment {segment.id}: {segment.name}{label}", ""]
        d = self.decision
        if d is None:
            lines.append("decision: none yet")
        else:
            truth, decided = d.get("label"), self.decided(d)
            verdict = "" if truth is None else ("  (right)" if str(truth) == decided else f"  (true {truth})")
            lines += [f"decision: {decided}{verdict}",
                      f"  rule {d.get('rule')}, margin {float(d.get('margin') or 0):.3g}"
                      + (f"; {d['reason']}" if d.get("reason") else ""),
                      f"  decoder {float(d.get('decoder_ns') or 0) / 1e3:.0f} us, after {d.get('events')} events",
                      f"  segment {d.get('segment')} {d.get('segment_name') or ''}  ({self.decisions} decisions)"]
        stream_rate, wall_rate = self.rates
        lines += ["",
                  f"events/s: {stream_rate:,.0f} (sensor time)",
                  f"          {wall_rate:,.0f} (wall time)",
                  f"events {self.events:,}  packets {self.packets:,}",
                  f"drops: {self.gaps:,} packets (seq gaps)",
                  f"frames: {self.pacer.drawn:,} drawn, {self.pacer.dropped:,} dropped",
                  f"t = {((self.t_now or 0) - (self.t_first or 0)) / 1e6:.3f} s since the "
                  + ("first event" if segment is None else "segment began")]
        return "\n".join(lines)

    def _update_rates(self) -> None:
        wall, events, t_prev = self._rate
        now = time.monotonic()
        new = self.events - events
        if t_prev is None:  # the first draw of a segment: since its first event
            t_prev = self.t_first if self.t_first is not None else self.t_now
        stream_span = ((self.t_now or 0) - (t_prev or 0)) / 1e6
        self.rates = (new / stream_span if stream_span > 0 else 0.0, new / max(now - wall, 1e-9))
        self._rate = (now, self.events, self.t_now)

    def draw(self) -> None:
        """Redraw the panels now: the static parts only when they changed (blitting), then the
        images, bars, decision and text; a saved video gets the frame."""
        if self.figure is None:
            self._build()
        self.pacer.drawn += 1
        self._fresh = False
        self._update_rates()
        self.image.set_data(self.frame_rgb())
        self.surface_image.set_data(self.surface())
        if self._layout_bars() or self.background is None:
            self.figure.canvas.draw()  # animated artists are skipped: this is the background
            self.background = self.figure.canvas.copy_from_bbox(self.figure.bbox)
        else:
            self.figure.canvas.restore_region(self.background)
        self._update_bars()
        self._update_overlay()
        self.text.set_text(self.status_text())
        for artist in [self.image, self.surface_image, self.overlay, self.text] + self.bars + self.bar_labels:
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
