"""File readers: one module per family of formats registers here; ``open_reader`` picks one.

A reader yields the file's events as chunks of canonical events (``pipeline.core.events.EVENT_DTYPE``,
t in the file's own time base, us) in file order, so a replay can start sending before the whole
file is decoded. Formats are detected from the content (magic bytes, header lines), never from
the file name alone; ``format=`` overrides detection.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np

from pipeline.core.events import concat_records

# Modules that register formats on import (one per family).
FORMAT_MODULES = ("sensors.aedat4", "sensors.nmnist", "sensors.jaer", "sensors.aedat3", "sensors.prophesee",
                  "sensors.eventstream", "sensors.csv_events", "sensors.numpy_events", "sensors.hdf5",
                  "sensors.rosbag")

HEAD_BYTES = 4096


class FormatError(ValueError):
    """A file that cannot be decoded; the message names the file and the byte offset, on one line
    (a library's message spread over several lines, as a YAML parser's, is joined)."""

    def __init__(self, path, offset: int | None, problem: str):
        problem = " ".join(line.strip() for line in problem.splitlines() if line.strip())
        where = f"{os.fspath(path)}" + (f" at byte {offset}" if offset is not None else "")
        super().__init__(f"{where}: {problem}")
        self.path = os.fspath(path)
        self.offset = offset
        self.problem = problem


@dataclass
class Reader:
    """An opened recording: its format, sensor size and a chunk iterator over its events."""

    path: str
    format: str
    width: int
    height: int
    chunks: Callable[[], Iterator[np.ndarray]]
    streams: list[str] = field(default_factory=list)  # other streams in the file (imu, frames...)


@dataclass(frozen=True)
class Format:
    name: str
    detect: Callable[[str, bytes], bool]  # (path, first HEAD_BYTES bytes) -> is this format
    open: Callable[..., Reader]  # (path, **options) -> Reader
    suffixes: tuple[str, ...] = ()
    # for a format whose files hold several event streams: the reader option that picks one,
    # which a format name NAME:VALUE sets (rosbag2:/events opens with topic="/events")
    selector: str = ""


class Formats(dict):
    """Registered formats by name; ``NAME:VALUE`` is format NAME with its ``selector`` option
    set to VALUE (a name a config file or a command line can carry to every process)."""

    def _selected(self, name: str) -> Format | None:
        base, sep, value = name.partition(":")
        fmt = dict.get(self, base) if sep and value else None
        if fmt is None or not fmt.selector:
            return None
        return replace(fmt, name=name, open=functools.partial(fmt.open, **{fmt.selector: value}))

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or self._selected(name) is not None

    def __getitem__(self, name) -> Format:
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        selected = self._selected(name)
        if selected is None:
            raise KeyError(name)
        return selected


_FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    _FORMATS[fmt.name] = fmt
    return fmt


def formats() -> Formats:
    for module in FORMAT_MODULES:
        importlib.import_module(module)
    return Formats(_FORMATS)


def check_not_special(path) -> None:
    """FormatError when ``path`` is a pipe, socket or device: opening a pipe waits for a writer
    for ever, and the readers need files they can size and map."""
    if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
        raise FormatError(path, None, "not a regular file (a pipe, socket or device)")


def detect_format(path) -> str:
    """The format name of ``path`` from its content; FormatError when nothing matches."""
    known = formats()
    try:
        if os.path.isdir(path):  # a format stored as a folder (rosbag2) is detected by its files
            head = b""
        else:
            check_not_special(path)
            with open(path, "rb") as handle:
                head = handle.read(HEAD_BYTES)
    except OSError as exc:
        raise FormatError(path, None, f"cannot open ({exc.strerror})") from None
    for fmt in known.values():
        if fmt.detect(os.fspath(path), head):
            return fmt.name
    raise FormatError(path, 0, f"unrecognised format (first bytes {head[:16]!r}); "
                               f"pass --format, one of {', '.join(sorted(known))}")


def open_reader(path, format: str = "auto", **options) -> Reader:
    """Open ``path`` with the named format, or the detected one when ``format == "auto"``."""
    known = formats()
    check_not_special(path)
    name = detect_format(path) if format == "auto" else format
    if name not in known:
        raise FormatError(path, None, f"unknown format {name!r}; known: {', '.join(sorted(known))}")
    return known[name].open(os.fspath(path), **options)


def read_all(path, format: str = "auto", **options) -> tuple[Reader, np.ndarray]:
    """The reader and all events of ``path`` in one array."""
    reader = open_reader(path, format, **options)
    return reader, concat_records(reader.chunks())
