"""CSV (or other delimited text) events with configurable columns.

One event per line. ``columns`` names the t, x, y, p columns by header name or 0-based index
(default ``t,x,y,p``, with the aliases of ``from_structured``: ts/timestamp, polarity/on).
Header names may carry the sensor size as ``name@size`` (``t,x@320,y@240,on``, the tonic/faery
convention), which sets width and height unless given. ``t_scale`` converts the t column to us
(1 for us, 1e6 for seconds); p > 0 means ON.
"""

from __future__ import annotations

import itertools
import re
from typing import Iterator

import numpy as np

from pipeline.events import make_events
from sensors.common import check_bounds, sensor_size
from sensors.readers import Format, FormatError, Reader, register_format

ALIASES = {"t": ("t", "ts", "timestamp"), "x": ("x",), "y": ("y",), "p": ("p", "polarity", "on")}
BLOCK_LINES = 200_000


def parse_header(path: str, line: str, delimiter: str) -> tuple[list[str], dict[str, int]]:
    """Column names of a header line (``@size`` removed) and the sizes it states."""
    names, sizes = [], {}
    for cell in line.strip().split(delimiter):
        name, _, size = cell.strip().partition("@")
        names.append(name.strip().lower())
        if size:
            if not size.isdigit():
                raise FormatError(path, 0, f"bad size in CSV header column {cell!r}")
            sizes[name.strip().lower()] = int(size)
    return names, sizes


def pick_columns(path: str, columns: str, names: list[str]) -> list[int]:
    """Indices of the t, x, y, p columns named (or numbered) in ``columns``."""
    wanted = [c.strip().lower() for c in columns.split(",")]
    if len(wanted) != 4:
        raise FormatError(path, None, f"columns must name t,x,y,p (4 columns), got {columns!r}")
    picked = []
    for field, name in zip("txyp", wanted):
        if name.isdigit():
            picked.append(int(name))
            continue
        options = (name,) if names and name in names else ALIASES.get(field, (name,))
        found = next((names.index(o) for o in options if o in names), None)
        if found is None:
            raise FormatError(path, 0, f"CSV header has no column {name!r} for {field} "
                                       f"(columns: {', '.join(names)})")
        picked.append(found)
    return picked


def parse_block(path: str, lines: list[bytes], starts: np.ndarray, delimiter: str,
                usecols: list[int], t_scale: float) -> np.ndarray:
    """Canonical events from non-blank text lines (``starts``: byte offset of each line)."""
    try:
        table = np.loadtxt(lines, delimiter=delimiter, usecols=usecols, dtype=np.float64, ndmin=2,
                           encoding="latin-1")
    except ValueError:
        for line, start in zip(lines, starts):  # find the line that failed, for its offset
            try:
                np.loadtxt([line], delimiter=delimiter, usecols=usecols, dtype=np.float64,
                           encoding="latin-1")
            except ValueError as exc:
                raise FormatError(path, int(start), f"bad CSV line {line[:60]!r}: {exc}") from None
        raise
    t = table[:, 0] * t_scale
    bad = ~np.isfinite(table).all(axis=1) | (np.abs(t) >= 2 ** 62)
    if bad.any():
        row = int(np.argmax(bad))
        raise FormatError(path, int(starts[row]), f"value out of range in CSV line {lines[row][:60]!r}")
    return make_events(np.rint(t).astype(np.int64), table[:, 1], table[:, 2], table[:, 3] > 0)


def open_csv(path: str, columns: str = "t,x,y,p", delimiter: str = ",", header: str = "auto",
             t_scale: float = 1.0, sensor: str = "", width: int = 0, height: int = 0) -> Reader:
    """A delimited text file. ``header``: "auto" (a first line with letters), "yes" or "no"."""
    with open(path, "rb") as handle:
        first = handle.readline().decode("latin-1")
    has_header = header == "yes" or (header == "auto" and bool(re.search(r"[A-Za-z_]", first)))
    names, sizes = parse_header(path, first, delimiter) if has_header else ([], {})
    usecols = pick_columns(path, columns, names)
    if sensor:
        width, height = sensor_size(sensor, path)
    if not (width and height):
        x_name, y_name = (names[usecols[1]], names[usecols[2]]) if names else ("", "")
        width, height = sizes.get(x_name, 0), sizes.get(y_name, 0)
    if not (width and height):
        raise FormatError(path, 0, "the CSV states no sensor size; pass --sensor or width/height")

    def chunks() -> Iterator[np.ndarray]:
        with open(path, "rb") as handle:
            offset = len(handle.readline()) if has_header else 0
            while True:
                lines = list(itertools.islice(handle, BLOCK_LINES))
                if not lines:
                    return
                ends = offset + np.cumsum([len(line) for line in lines])
                kept = [i for i, line in enumerate(lines) if line.strip()]
                starts = (ends - [len(line) for line in lines])[kept]
                events = parse_block(path, [lines[i] for i in kept], starts, delimiter, usecols,
                                     t_scale)
                check_bounds(path, events, width, height, lambda i: starts[i])
                offset = int(ends[-1])
                yield events

    return Reader(path=path, format="csv", width=width, height=height, chunks=chunks)


def _detect(path: str, head: bytes) -> bool:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return False
    lines = text.splitlines()
    return len(lines) >= 2 and bool(re.fullmatch(r"\s*-?[\d.eE+-]+(\s*[,;\t ]\s*-?[\d.eE+-]+){3,}\s*",
                                                 lines[1]))


register_format(Format("csv", _detect, open_csv, (".csv", ".txt")))
