"""The CSV reader (sensors/csv_numbers.py) against numpy.loadtxt, pyarrow.csv and faery.

``reference`` is that old parse, slow and plain: numpy.loadtxt over the data lines, float64
arithmetic for t and truncation for x, y, and the offset of the first line that fails. The kernel
must give the same events bit for bit, or fail at the same line: on the real recording, on
generated variants (floats, exponents, tabs, CRLF, reordered and extra columns, negative values,
comments, blank lines) and on corrupted copies of them.
"""

from __future__ import annotations

import decimal
import io
import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from sensors import csv_numbers
from pipeline.core.events import EVENT_DTYPE
from sensors import csv_events
from sensors.readers import FormatError, open_reader, read_all

DISC = "eventstream/dvs_disc.csv"
WIDTH, HEIGHT = 320, 240


def reference(data: bytes, usecols, delimiter=",", t_scale=1.0, width=WIDTH, height=HEIGHT,
              skip_first=False) -> tuple[np.ndarray, int | None]:
    """(events before the first bad line, its byte offset or None) by numpy.loadtxt."""
    offsets, lines, offset = [], [], 0
    for n, line in enumerate(io.BytesIO(data)):  # lines end at b"\n" only, like file iteration
        if line.strip() and not line.startswith(b"#") and not (skip_first and n == 0):
            offsets.append(offset)
            lines.append(line)
        offset += len(line)

    def load(rows):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data"
            return np.loadtxt(rows, delimiter=delimiter, usecols=usecols, dtype=np.float64,
                              ndmin=2, encoding="latin-1").reshape(-1, 4)

    try:
        table, bad = load(lines), len(lines)
    except ValueError:
        bad = next(i for i, line in enumerate(lines) if not raises_value_error(load, [line]))
        table = load(lines[:bad])
    t = table[:, 0] * t_scale
    with np.errstate(invalid="ignore"):
        x, y = np.trunc(table[:, 1]), np.trunc(table[:, 2])
        wrong = (~np.isfinite(table).all(axis=1) | ~(np.abs(t) < 2 ** 62)
                 | ~((0 <= x) & (x < width) & (0 <= y) & (y < height)))
    first = int(np.argmax(wrong)) if wrong.any() else bad
    events = np.zeros(first, EVENT_DTYPE)
    events["t"] = np.rint(t[:first]).astype(np.int64)
    events["x"], events["y"] = x[:first], y[:first]
    events["p"] = table[:first, 3] > 0
    return events, (offsets[first] if first < len(lines) else None)


def raises_value_error(function, argument) -> bool:
    """False when ``function(argument)`` raises ValueError (the line loadtxt rejects)."""
    try:
        function(argument)
    except ValueError:
        return False
    return True


def ours(path, **options) -> tuple[np.ndarray, int | None]:
    """(events accepted before any error, the error's offset or None) of the CSV reader."""
    chunks = []
    try:
        for chunk in open_reader(path, "csv", **options).chunks():
            assert not chunk.view(np.uint8).reshape(-1, 16)[:, 13:].any()  # padding: zeros
            chunks.append(chunk.copy())
    except FormatError as exc:
        assert exc.offset is not None, str(exc)
        return np.concatenate(chunks or [np.empty(0, EVENT_DTYPE)]), exc.offset
    return np.concatenate(chunks or [np.empty(0, EVENT_DTYPE)]), None


def assert_same(got: tuple[np.ndarray, int | None], want: tuple[np.ndarray, int | None]):
    assert got[1] == want[1]
    assert len(got[0]) == len(want[0])
    for field in "txyp":
        np.testing.assert_array_equal(got[0][field], want[0][field], err_msg=field)


# --- the real recording ---


def test_real_recording_matches_loadtxt_pyarrow_and_faery(recordings):
    import faery
    import pyarrow.csv as pacsv

    path = recordings / DISC
    data = path.read_bytes()
    got = ours(path)
    assert got[1] is None and len(got[0]) == 473_225  # MANIFEST.md
    assert_same(got, reference(data, [0, 1, 2, 3], skip_first=True))
    theirs = np.concatenate(list(faery.file_decoder.Decoder(path, dimensions_fallback=(320, 240))))
    assert (got[0]["t"] == theirs["t"]).all() and (got[0]["x"] == theirs["x"]).all()
    assert (got[0]["y"] == theirs["y"]).all() and (got[0]["p"] == theirs["on"]).all()
    table = pacsv.read_csv(path)  # columns t, x@320, y@240, on; types inferred
    for field, column in zip("txyp", table.columns):
        assert (got[0][field] == column.to_numpy()).all(), field


@pytest.mark.parametrize("block,chunk", [(32, 7), (100, 1000), (4099, 64)])
def test_lines_cut_by_blocks_and_chunks(recordings, tmp_path, monkeypatch, block, chunk):
    """Partial lines carried between blocks; full chunks yielded mid-block (a 20 kB prefix)."""
    data = (recordings / DISC).read_bytes()[:20_000]
    data = data[:data.rindex(b"\n") + 1]
    path = tmp_path / "disc.csv"
    path.write_bytes(data)
    want = reference(data, [0, 1, 2, 3], skip_first=True)
    monkeypatch.setattr(csv_events, "BLOCK_BYTES", block)
    monkeypatch.setattr(csv_events, "CHUNK_EVENTS", chunk)
    assert_same(ours(path), want)
    sizes = [len(c) for c in open_reader(path).chunks()]
    assert max(sizes) == chunk and sum(sizes) == len(want[0])


def test_line_longer_than_a_block_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "long.csv"
    path.write_bytes(b"t,x@8,y@8,p\n1,2,3,4\n" + b"1" * 100 + b",2,3,4\n")
    monkeypatch.setattr(csv_events, "BLOCK_BYTES", 64)
    with pytest.raises(FormatError, match="line longer than 64 bytes") as err:
        read_all(path)
    assert err.value.offset == 20


# --- options: columns, delimiters, headers, scales ---


def test_csv_header_names_aliases_delimiter_and_seconds(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_bytes(b"Polarity\tts\tjunk\tx@8\ty@4\r\n1\t1.5e-3\tabc\t7\t3\r\n0\t-2E-6\t\t0\t0\r\n"
                     b"\r\n# a comment line\n-1\t0.000123\t x \t1\t2 # trailing comment\n")
    reader, events = read_all(path, "csv", delimiter="\t", t_scale=1e6)
    assert (reader.width, reader.height) == (8, 4)
    assert events.tolist() == [(1500, 7, 3, 1), (-2, 0, 0, 0), (123, 1, 2, 0)]


def test_first_line_with_exponents_is_data_not_a_header(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(b"1.5e-3,1,2,1\n2e-3,3,4,0\n")
    _, events = read_all(path, "csv", columns="0,1,2,3", t_scale=1e6, sensor="8x8")
    assert events.tolist() == [(1500, 1, 2, 1), (2000, 3, 4, 0)]


def test_bad_delimiter_is_refused(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(b"1,2,3,4\n")
    for delimiter in ("#", "-", ", ", "e"):
        with pytest.raises(FormatError, match="delimiter"):
            read_all(path, "csv", delimiter=delimiter, sensor="8x8")


# --- bad lines: FormatError at the start of the line, with its text ---


@pytest.mark.parametrize("line,problem", [
    (b"12,x,3,1", "column 1 (counted from 0) is not a number"),
    (b"12,1e,3,1", "column 1 (counted from 0) is not a number"),
    (b"12,nan,3,1", "column 1 (counted from 0) is not a number"),
    (b"12,1,3", "3 columns, fewer than the 4 needed"),
    (b"4611686018427387904,1,1,1", "value out of range"),  # 2**62 us
    (b"1e300,1,1,1", "value out of range"),
    (b"1,1,1,1e999", "value out of range"),
    (b"1,40000,1,1", "value out of range"),
    (b"1,2\r3,1,1", "2 columns, fewer than the 4 needed"),
    (b"1,2,3,1,\r5", "carriage return inside the line"),
    (b"1,9,3,1", "event x=9 y=3 outside the 8x8 sensor"),
    (b"1,-1,3,1", "event x=-1 y=3 outside the 8x8 sensor"),
])
def test_bad_line_names_its_offset_and_text(tmp_path, line, problem):
    path = tmp_path / "bad.csv"
    good = b"t,x@8,y@8,p\n1,2,3,1\n\n"
    path.write_bytes(good + line + b"\n2,2,2,0\n")
    with pytest.raises(FormatError, match=re.escape(problem)) as err:
        list(open_reader(path).chunks())
    assert err.value.offset == len(good)
    if "sensor" not in problem:
        assert repr(line[:60]) in str(err.value)


def test_events_before_a_bad_line_are_delivered(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"t,x@8,y@8,p\n1,2,3,1\n2,2,2,0\n3,x,1,1\n")
    chunks = open_reader(path).chunks()
    assert next(chunks).tolist() == [(1, 2, 3, 1), (2, 2, 2, 0)]
    with pytest.raises(FormatError):
        next(chunks)


# --- numbers: bit for bit what float() gives ---


def parse_number(cell: str) -> float:
    data = np.frombuffer(cell.encode("latin-1") + b"\n", np.uint8)
    ok, value, end = csv_numbers.read_number(data, 0, len(data), ord(","))
    assert ok and end == len(data) - 1, cell
    return value


def near_halfway(seed: int, count: int) -> list[str]:
    """17 to 23 significant digits of the exact midpoint between two neighbouring floats, give or
    take one unit in the last digit: where 128 bits may not decide the rounding."""
    rng = np.random.default_rng(seed)
    cells = []
    for bits in rng.integers(1, 0x7FEFFFFFFFFFFFFF, count):
        low = float(np.int64(bits).view(np.float64))
        with decimal.localcontext(decimal.Context(prec=2000)):
            middle = (decimal.Decimal(low) + decimal.Decimal(math.nextafter(low, math.inf))) / 2
        digits = int(rng.integers(17, 24))
        mantissa, _, exponent = f"{middle:.{digits - 1}e}".partition("e")
        whole = int(mantissa.replace(".", "")) + int(rng.integers(-1, 2))
        cells.append(f"{whole}e{int(exponent) - digits + 1}")
    return cells


def exactly_halfway() -> list[str]:
    """r * 2**k * 10**e, r * 5**e odd of 54 bits: exactly between two floats (1e23 is one)."""
    cells = []
    for e in range(1, 28):
        for r in range(2 ** 54 // 5 ** e | 1, 2 ** 54 // 5 ** e + 40, 2):
            if (r * 5 ** e).bit_length() == 54:
                cells += [f"{r << k}e{e}" for k in range(4) if r << k < 10 ** 19]
    return cells


def test_numbers_round_like_float():
    rng = np.random.default_rng(7)
    cells = near_halfway(1, 3000) + exactly_halfway()
    mantissas, exponents = rng.integers(1, 10 ** 18, 3000), rng.integers(-345, 310, 3000)
    cells += [f"{m}e{e}" for m, e in zip(mantissas, exponents)]
    scaled = rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000)
    cells += [repr(float(v)) for v in scaled] + [f"{v:.18e}" for v in rng.random(2000)]
    cells += [f"{v:.17g}" for v in rng.random(2000) * 1e6]
    cells += ["0", "-0", "+7", "007", ".5", "5.", "1e0", "1E+05", "-2.5e-3", "9007199254740993",
              "18446744073709551615", "123456789012345678901234567890",
              "0.1000000000000000055511151231257827", "4.9e-324", "2.4703282292062327e-324",
              "2.2250738585072011e-308", "1.7976931348623157e308", "1.7976931348623159e308",
              "1e-400", "1e400", "0." + "0" * 400 + "1", "1" + "0" * 400]
    for cell in cells:
        want, got = float(cell), parse_number(cell)
        assert got == want, (cell, got, want)
        assert math.copysign(1, got) == math.copysign(1, want), cell


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_float_repr_round_trips(value):
    assert parse_number(repr(value)) == value
    assert parse_number(f"{value:.18e}") == float(f"{value:.18e}")


@given(st.from_regex(r"\A[+-]?([0-9]{0,25}\.?[0-9]{0,25})([eE][+-]?[0-9]{1,4})?\Z"))
@example("0.0e0")
def test_decimal_strings_like_float_and_loadtxt(cell):
    data = np.frombuffer(cell.encode() + b"\n", np.uint8)
    ok, value, end = csv_numbers.read_number(data, 0, len(data), ord(","))
    try:
        want = float(cell)
    except ValueError:
        assert not (ok and end == len(data) - 1), cell
        return
    assert ok and end == len(data) - 1 and value == want, cell
    assert math.copysign(1, value) == math.copysign(1, want), cell


# --- generated files: the reader against the reference, clean and corrupted ---


@st.composite
def csv_files(draw):
    """(bytes, reader options, loadtxt columns, t_scale) of a generated CSV variant."""
    n = draw(st.integers(0, 40))
    ints = st.integers(-(2 ** 40), 2 ** 40)
    t = draw(st.lists(st.one_of(ints, st.floats(-1e9, 1e9)), min_size=n, max_size=n))
    x = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    p = draw(st.lists(st.sampled_from(["0", "1", "-1", "0.5", "-0", "2e0"]), min_size=n,
                      max_size=n))
    delimiter = draw(st.sampled_from([",", ";", "\t", " "]))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    style = draw(st.sampled_from(["{}", "{:.6f}", "{:.3e}", "{:.18e}", "{!r}", "{:.17g}"]))
    t_scale = draw(st.sampled_from([1.0, 1e6, 1e-3, 0.5]))
    names = ["t", "x", "y", "p", "extra"]
    order = draw(st.permutations(range(5)))
    header = draw(st.booleans())
    rows = []
    for i in range(n):
        value = t[i] / t_scale if isinstance(t[i], int) and t_scale != 1.0 else t[i]
        cells = {"t": style.format(value) if isinstance(value, float) else str(value),
                 "x": str(x[i]), "p": p[i],
                 "y": draw(st.sampled_from([str(y[i]), f"{y[i]}.75", f"{y[i]:.1e}"])),
                 "extra": draw(st.sampled_from(["", "abc", "-3.5", "nan"]))}
        pad = draw(st.sampled_from(["", " "])) if delimiter != " " else ""
        rows.append(delimiter.join(pad + cells[names[k]] + pad for k in order))
        if draw(st.integers(0, 9)) == 0:
            rows.append(draw(st.sampled_from(["", "# comment", "  ", "\t"])))
    sized = {"x": "x@8", "y": "y@6"}
    lines = [delimiter.join(sized.get(names[k], names[k]) for k in order)] if header else []
    lines += rows
    body = end.join(lines) + draw(st.sampled_from([end, ""]))
    by_name = draw(st.booleans()) and header
    columns = ",".join("txyp") if by_name else ",".join(str(order.index(k)) for k in range(4))
    options = dict(columns=columns, delimiter=delimiter, t_scale=t_scale, sensor="8x6",
                   header="yes" if header else "no")
    return body.encode(), options, [order.index(k) for k in range(4)], t_scale


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def check_file(tmp_path, data: bytes, options: dict, usecols: list[int], t_scale: float):
    path = tmp_path / "case.csv"
    path.write_bytes(data)
    want = reference(data, usecols, options["delimiter"], t_scale, 8, 6, options["header"] == "yes")
    assert_same(ours(path, **options), want)


@SETTINGS
@given(csv_files())
def test_generated_files_match_loadtxt(tmp_path, case):
    check_file(tmp_path, *case)


@SETTINGS
@given(csv_files(), st.data())
def test_corrupted_files_fail_where_loadtxt_fails(tmp_path, case, choices):
    """One byte replaced or inserted after the header: same events, or the same bad line."""
    data, options, usecols, t_scale = case
    start = (data.find(b"\n") + 1 or len(data)) if options["header"] == "yes" else 0
    assume(len(data) > start)
    at = choices.draw(st.integers(start, len(data) - 1))
    alphabet = [*b",;\t \r\n#.-+eE0123456789x", 0, 0x1C, 0x85, 0xA0, 0xFF]
    byte = choices.draw(st.sampled_from(alphabet))
    keep = choices.draw(st.booleans())
    check_file(tmp_path, data[:at] + bytes([byte]) + data[at + (0 if keep else 1):], options,
               usecols, t_scale)


@pytest.mark.parametrize("where", [0, 1, 2])
def test_every_byte_in_a_cell_like_loadtxt(where):
    """Each of the 256 byte values before, inside or after a number: accepted as loadtxt does."""
    words = np.empty(4, np.int64)
    for byte in range(256):
        cell = b"12"[:where] + bytes([byte]) + b"12"[where:]
        line = b"1," + cell + b",3,1\n"
        data = np.frombuffer(line, np.uint8)
        status, position, count, _ = csv_numbers.parse_events(data, 0, len(data), True, ord(","),
                                                       np.array([1, 2, 4, 8]), 1.0, 100, 8, words)
        got = words.view(EVENT_DTYPE)[:count], None if status == csv_numbers.OK else position
        assert_same(got, reference(line, [0, 1, 2, 3], width=100, height=8))
