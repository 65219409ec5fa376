"""CSV (or other delimited text) events with configurable columns.

One event per line. ``columns`` names the t, x, y, p columns by header name or 0-based index
(default ``t,x,y,p``, with the aliases of ``from_structured``: ts/timestamp, polarity/on).
Header names may carry the sensor size as ``name@size`` (``t,x@320,y@240,on``, the tonic/faery
convention), which sets width and height unless given. ``t_scale`` converts the t column to us
(1 for us, 1e6 for seconds); p > 0 means ON. The text is parsed by ``sensors.csv_numbers`` in blocks of
BLOCK_BYTES, with the same values and the same accepted lines as ``numpy.loadtxt``.
"""

from __future__ import annotations

import re
from typing import Iterator

import numpy as np

from sensors import csv_numbers
from sensors.common import check_bounds, new_events, sensor_size
from sensors.readers import Format, FormatError, Reader, register_format

ALIASES = {"t": ("t", "ts", "timestamp"), "x": ("x",), "y": ("y",), "p": ("p", "polarity", "on")}
BLOCK_BYTES = 1 << 22  # bytes read at a time, and the longest line accepted
CHUNK_EVENTS = 1 << 16  # events per chunk at most
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
PROBLEMS = {
    csv_numbers.BAD_NUMBER: "column {} (counted from 0) is not a number",
    csv_numbers.FEW_COLUMNS: "{} columns, fewer than the {needed} needed",
    csv_numbers.OUT_OF_RANGE: "value out of range (|t| >= 2**62 us, |x| or |y| >= 32768, or infinite)",
    csv_numbers.STRAY_CR: "carriage return inside the line",
}


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


def has_header_cells(line: str, delimiter: str) -> bool:
    """True when a cell of ``line`` (comment removed) is not a number, i.e. names a column."""
    cells = (cell.strip() for cell in line.partition("#")[0].split(delimiter))
    return any(cell and not NUMBER.fullmatch(cell) for cell in cells)


def line_error(path: str, data: np.ndarray, offset: int, status: int, detail: int,
               needed: int) -> FormatError:
    """The FormatError of the line starting at data[0] (byte ``offset`` of the file)."""
    line = bytes(data[:80]).partition(b"\n")[0][:60]
    problem = PROBLEMS[status].format(detail, needed=needed)
    return FormatError(path, offset, f"bad CSV line {line!r}: {problem}")


def open_csv(path: str, columns: str = "t,x,y,p", delimiter: str = ",", header: str = "auto",
             t_scale: float = 1.0, sensor: str = "", width: int = 0, height: int = 0) -> Reader:
    """A delimited text file. ``header``: "auto" (a first line naming columns), "yes" or "no"."""
    if len(delimiter) != 1 or delimiter in "0123456789.+-eE#\r\n" or ord(delimiter) > 255:
        raise FormatError(path, None, f"delimiter {delimiter!r} must be one character that "
                                      "cannot be part of a number, a line end or a comment")
    with open(path, "rb") as handle:
        first = handle.readline(BLOCK_BYTES).decode("latin-1")
    has_header = header == "yes" or (header == "auto" and has_header_cells(first, delimiter))
    names, sizes = parse_header(path, first, delimiter) if has_header else ([], {})
    usecols = pick_columns(path, columns, names)
    if sensor:
        width, height = sensor_size(sensor, path)
    if not (width and height):
        x_name, y_name = (names[usecols[1]], names[usecols[2]]) if names else ("", "")
        width, height = sizes.get(x_name, 0), sizes.get(y_name, 0)
    if not (width and height):
        raise FormatError(path, 0, "the CSV states no sensor size; pass --sensor or width/height")
    roles = np.zeros(max(usecols) + 1, np.int64)
    for role, column in zip((csv_numbers.T_ROLE, csv_numbers.X_ROLE, csv_numbers.Y_ROLE,
                             csv_numbers.P_ROLE), usecols):
        roles[column] |= role
    start = len(first.encode("latin-1")) if has_header else 0
    scale = float(t_scale)

    def chunks() -> Iterator[np.ndarray]:
        data = np.empty(BLOCK_BYTES, np.uint8)  # data[:filled] holds the file from byte base on
        base, filled, position, final = start, 0, 0, False
        events, words = new_events(CHUNK_EVENTS)
        count = 0
        with open(path, "rb") as handle:
            handle.seek(start)
            while True:
                status, position, parsed, detail = csv_numbers.parse_events(
                    data, position, filled, final, ord(delimiter), roles, scale, width, height,
                    words[2 * count:])
                count += parsed
                if status != csv_numbers.OK:
                    if count:
                        yield events[:count]
                    if status == csv_numbers.OUTSIDE_SENSOR:
                        check_bounds(path, events[count:count + 1], width, height,
                                     lambda _: base + position)
                    raise line_error(path, data[position:filled], base + position, status, detail,
                                     len(roles))
                if count == CHUNK_EVENTS:
                    yield events
                    (events, words), count = new_events(CHUNK_EVENTS), 0
                elif final:
                    if count:
                        yield events[:count]
                    return
                else:  # keep the partial line, read on
                    if position == 0 and filled == BLOCK_BYTES:
                        raise FormatError(path, base, f"line longer than {BLOCK_BYTES} bytes")
                    data[:filled - position] = data[position:filled]
                    base, filled, position = base + position, filled - position, 0
                    read = handle.readinto(memoryview(data)[filled:])
                    filled += read
                    final = read == 0

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
