"""A continuous stream built from a labelled dataset: the marker-free stand-in for a camera
watching objects come and go.

The recordings are laid back to back on one time axis, each followed by ``gap_us`` of silence
(``concatenate``), optionally with uniform background noise (``add_noise``: events/s spread over
every pixel, both polarities), the way a DVS's background activity looks (Delbruck 2008, "Frame-free dynamic
digital vision"). The stream carries no segment markers; the ground truth (which object is shown
when) comes back separately as ``Presented`` records, for evaluation only.

Two recordings of the same class shown back to back with no gap look like one object to any
read-out that only sees the class evidence (docs/snn.md, "Live read-out"), so ``interleave``
orders a dataset so that neighbours differ in label whenever the class counts allow it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.core.events import EVENT_DTYPE, concat_records
from sensors.readers import FormatError, read_all
from sensors.replay import SegmentFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Presented:
    """One recording in the continuous stream: shown from ``onset_us`` to ``end_us`` (stream
    time, us, both inclusive), ``events`` events, ground-truth ``label``, from ``path``."""

    onset_us: int
    end_us: int
    label: str | None
    path: str
    events: int


def interleave(files: list[SegmentFile], seed: int = 0) -> list[SegmentFile]:
    """``files`` in a seeded random order in which no two neighbours share a label, whenever the
    label counts allow it (no label holds more than half the files, rounded up)."""
    rng = np.random.default_rng(seed)
    left = [files[i] for i in rng.permutation(len(files))]
    out: list[SegmentFile] = []
    while left:
        counts: dict = {}
        for f in left:
            counts[f.label] = counts.get(f.label, 0) + 1
        allowed = [f for f in left if not out or f.label is None or f.label != out[-1].label] or left
        most = max(counts[f.label] for f in allowed)
        if 2 * most > len(left):  # the largest class must go now or it cannot be spread out
            allowed = [f for f in allowed if counts[f.label] == most]
        pick = allowed[0]
        out.append(pick)
        left.remove(pick)
    return out


def concatenate(files: list[SegmentFile], gap_us: int,
                format: str = "auto") -> tuple[np.ndarray, list[Presented], int, int]:
    """The events of ``files`` back to back, each shifted to start ``gap_us`` after the previous
    one ended (the first at t = 0). Returns (events sorted by time, what was presented when,
    width, height); the sensor size is the largest of the files'. An unreadable file is left
    out (logged), as a replay skips it."""
    if gap_us < 0:
        raise ValueError(f"gap_us must be >= 0, got {gap_us}")
    chunks, shown, start, width, height = [], [], 0, 0, 0
    for item in files:
        try:
            reader, events = read_all(item.path, format)
        except FormatError as exc:
            log.error("skipping unreadable recording: %s", exc)
            continue
        width, height = max(width, reader.width), max(height, reader.height)
        if not len(events):
            continue
        events = np.array(events)  # own copy: shifted in place below
        events["t"] += start - int(events["t"][0])
        end = int(events["t"][-1])
        shown.append(Presented(start, end, item.label, item.path, len(events)))
        chunks.append(events)
        start = end + gap_us + 1
    return concat_records(chunks), shown, width, height


def add_noise(events: np.ndarray, rate: float, width: int, height: int, seed: int = 0) -> np.ndarray:
    """``events`` with ``rate`` events/s of uniform noise added over their time span, every pixel
    and both polarities equally likely; sorted by time (noise after events of the same time)."""
    if rate < 0:
        raise ValueError(f"noise rate must be >= 0 events/s, got {rate}")
    if rate == 0 or not len(events):
        return events
    rng = np.random.default_rng(seed)
    t0, t1 = int(events["t"][0]), int(events["t"][-1]) + 1
    count = int(rng.poisson(rate * (t1 - t0) / 1e6))
    noise = np.zeros(count, EVENT_DTYPE)
    noise["t"] = np.sort(rng.integers(t0, t1, count))
    noise["x"] = rng.integers(0, width, count)
    noise["y"] = rng.integers(0, height, count)
    noise["p"] = rng.integers(0, 2, count)
    merged = concat_records([events, noise])
    return merged[np.argsort(merged["t"], kind="stable")]
