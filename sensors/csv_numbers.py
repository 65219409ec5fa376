"""Delimited numeric text (CSV, TSV, space-separated) -> event records, parsed on the raw bytes.

Follows what ``numpy.loadtxt(lines, delimiter=d, usecols=..., dtype=float64)`` (comments "#")
accepts and returns, value for value:

- A line ends at ``\\n``; a ``\\r`` outside a comment must come right before it (CRLF) or at the
  end of the data. A line of ASCII whitespace only is skipped, as is a line starting with ``#``;
  anything from ``#`` on is a comment.
- Cells are split at the one-byte delimiter and stripped of whitespace (``str.isspace`` of the
  latin-1 character). Cells after the last used column are not read.
- A number is ``[+-]digits[.digits][(e|E)[+-]digits]`` with a digit before the exponent. It becomes
  the float64 nearest to it, as ``float()`` gives: Clinger's exact fast path, else Eisel-Lemire
  (Lemire 2021, "Number parsing at a gigabyte per second"; as in Go's ``strconv``) for up to 19
  significant digits, else Python's ``float`` (rare: more digits, subnormals, near-halfway cases).
  ``nan`` and ``inf`` are not numbers here (the reader rejects non-finite values anyway).

Each row becomes one canonical event (``pipeline.core.events.EVENT_DTYPE``), written through the
records viewed as flat int64 words (``sensors.common.new_events``): event i is word 2 i,
``t = rint(t_value * t_scale)`` (us), and word 2 i + 1, ``x | y << 16 | p << 32`` (little-endian
int16 x at byte 8, y at byte 10, int8 p at byte 12, zero padding), x and y truncated towards zero
and p = 1 when its value is > 0.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, objmode, types
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros
from numba.extending import intrinsic

# roles[column]: bit mask of the event fields a column holds
T_ROLE, X_ROLE, Y_ROLE, P_ROLE = 1, 2, 4, 8

# statuses returned by parse_events (OK: stopped at the end of the data or with ``words`` full)
OK, BAD_NUMBER, FEW_COLUMNS, OUT_OF_RANGE, OUTSIDE_SENSOR, STRAY_CR = range(6)

T_LIMIT = 2.0 ** 62  # |t| in us must stay below this
COORD_LIMIT = 32768.0  # |x|, |y| must stay below this (int16)
MAX_DIGITS = 19  # significant digits that always fit in a uint64 mantissa

NEWLINE, CR, HASH, SPACE, PLUS, MINUS, POINT, ZERO = 10, 13, 35, 32, 43, 45, 46, 48

_EXACT_POWERS = np.array([10.0 ** k for k in range(23)])  # exact in float64 up to 1e22
_MIN_EXP10, _MAX_EXP10 = -342, 308  # beyond: zero or infinity for any 19-digit mantissa


def _powers_of_ten_128() -> np.ndarray:
    """(high, low) uint64 words of 10**e normalised to 128 bits and rounded down, e in
    [_MIN_EXP10, _MAX_EXP10]: Eisel-Lemire's table, computed exactly with Python integers."""
    table = np.empty((_MAX_EXP10 - _MIN_EXP10 + 1, 2), np.uint64)
    for row, e in enumerate(range(_MIN_EXP10, _MAX_EXP10 + 1)):
        if e >= 0:
            power = 10 ** e
            value = power >> (power.bit_length() - 128) if power.bit_length() > 128 \
                else power << (128 - power.bit_length())
        else:
            divisor = 10 ** -e
            value = (1 << (127 + divisor.bit_length())) // divisor
        table[row] = value >> 64, value & (2 ** 64 - 1)
    return table


_POWERS_128 = _powers_of_ten_128()

_U1, _U3, _U8, _U9, _U32, _U63, _U64 = (np.uint64(k) for k in (1, 3, 8, 9, 32, 63, 64))
_LOW9, _LOW32 = np.uint64(0x1FF), np.uint64(0xFFFFFFFF)
_EXACT_MANTISSA = np.uint64(2 ** 53)
# SWAR: eight bytes in one uint64, byte k of the text in bits 8k..8k+7
_HIGH_NIBBLES, _LOW_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0), np.uint64(0x0F0F0F0F0F0F0F0F)
_ALL_0X30, _ALL_0X06 = np.uint64(0x3030303030303030), np.uint64(0x0606060606060606)
_PAIRS = np.uint64(0x000000FF000000FF)
_PAIRS_TIMES_1 = np.uint64(100 + (1_000_000 << 32))
_PAIRS_TIMES_2 = np.uint64(1 + (10_000 << 32))


@intrinsic
def _load_eight_bytes(typingctx, data, i):
    """The uint64 of data[i:i + 8] (uint8, C-contiguous; unaligned little-endian load)."""
    if not (isinstance(data, types.Array) and data.dtype == types.uint8 and data.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = builder.bitcast(builder.gep(array.data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(pointer, align=1)
    return types.uint64(data, i), codegen


@njit(cache=True, nogil=True)
def _eight_digits(word):
    """The number written by eight ASCII digit bytes, the first in the low byte (leading zero
    bytes count as 0 digits): three multiplications (Lemire, fast_float)."""
    word = word * np.uint64(10) + (word >> _U8)
    pairs_1, pairs_2 = word & _PAIRS, (word >> np.uint64(16)) & _PAIRS
    return (pairs_1 * _PAIRS_TIMES_1 + pairs_2 * _PAIRS_TIMES_2) >> _U32


@njit(cache=True, nogil=True)
def _multiply_128(a, b):
    """(high, low) uint64 words of the 128-bit product of two uint64."""
    a_low, a_high = a & _LOW32, a >> _U32
    b_low, b_high = b & _LOW32, b >> _U32
    low_low, high_low = a_low * b_low, a_high * b_low
    middle = (low_low >> _U32) + (high_low & _LOW32) + a_low * b_high
    return (a_high * b_high + (high_low >> _U32) + (middle >> _U32),
            (middle << _U32) | (low_low & _LOW32))


@njit(cache=True, nogil=True)
def eisel_lemire(mantissa, exp10):
    """(ok, mantissa * 10**exp10 rounded to the nearest float64) for a uint64 mantissa > 0 and
    exp10 in [-342, 308]; ok is False when 128 bits cannot decide or the result is subnormal or
    infinite (Go ``strconv.eiselLemire64``, step by step)."""
    leading = leading_zeros(mantissa)
    mantissa <<= leading
    exp2 = ((217706 * exp10) >> 16) + 64 + 1023 - np.int64(leading)
    high, low = _multiply_128(mantissa, _POWERS_128[exp10 - _MIN_EXP10, 0])
    if high & _LOW9 == _LOW9 and low + mantissa < mantissa:  # wider approximation
        more_high, more_low = _multiply_128(mantissa, _POWERS_128[exp10 - _MIN_EXP10, 1])
        merged_low = low + more_high
        if merged_low < low:
            high += _U1
        if high & _LOW9 == _LOW9 and merged_low + _U1 == 0 and more_low + mantissa < mantissa:
            return False, 0.0
        low = merged_low
    top = high >> _U63
    result = high >> (top + _U9)
    exp2 -= 1 - np.int64(top)
    if low == 0 and high & _LOW9 == 0 and result & np.uint64(3) == _U1:  # halfway: ambiguous
        return False, 0.0
    result = (result + (result & _U1)) >> _U1
    if result >> np.uint64(53):
        result >>= _U1
        exp2 += 1
    if exp2 <= 0 or exp2 >= 0x7FF:
        return False, 0.0
    return True, math.ldexp(float(result), exp2 - 1075)


@njit(cache=True)  # not nogil: the object-mode block takes the GIL itself
def _python_float(data, start, end):
    """float() of the ASCII number in data[start:end] (already checked to be a number)."""
    with objmode(value="float64"):
        value = float(data[start:end].tobytes())
    return value


@njit(cache=True, nogil=True)
def decimal_to_float(mantissa, digits, exp10):
    """(ok, the float64 nearest to mantissa * 10**exp10) for a uint64 mantissa of ``digits``
    significant digits; ok is False when only ``float()`` of the text can tell."""
    if digits > MAX_DIGITS:
        return False, 0.0
    if mantissa == 0:
        return True, 0.0
    if exp10 == 0:
        return True, float(mantissa)
    if mantissa <= _EXACT_MANTISSA and -22 <= exp10 <= 22:  # both exact: one rounding
        return True, (float(mantissa) * _EXACT_POWERS[exp10] if exp10 > 0 else
                      float(mantissa) / _EXACT_POWERS[-exp10])
    if exp10 < _MIN_EXP10:
        return True, 0.0
    if exp10 > _MAX_EXP10:
        return True, np.inf
    return eisel_lemire(mantissa, exp10)


@njit(cache=True, nogil=True, inline="always")
def _is_cell_space(c, delimiter):
    """Whitespace stripped from cells (line ends excluded, the delimiter kept)."""
    return c != delimiter and (c == SPACE or c == 9 or c == 11 or c == 12 or 28 <= c <= 31
                               or c == 0x85 or c == 0xA0)


@njit(cache=True, nogil=True, inline="always")  # inlined: no array reference counting per cell
def read_number(data, i, end, delimiter):
    """(ok, value, position after the number and its surrounding whitespace) of the cell at i."""
    if i + 8 <= end:  # fast path: 1 to 7 digits and the end of the cell, read as one word
        word = _load_eight_bytes(data, i)
        not_digits = ((word & _HIGH_NIBBLES) ^ _ALL_0X30) | \
            (((word + _ALL_0X06) & _HIGH_NIBBLES) ^ _ALL_0X30)  # exact up to the first non-digit
        length = trailing_zeros(not_digits) >> _U3
        if 0 < length < _U8:
            after = data[i + length]
            if after == delimiter or after == NEWLINE or after == CR or after == HASH:
                packed = (word & _LOW_NIBBLES) << (_U64 - _U8 * length)
                return True, float(_eight_digits(packed)), i + np.int64(length)
    while i < end and _is_cell_space(data[i], delimiter):
        i += 1
    negative = False
    if i < end and (data[i] == MINUS or data[i] == PLUS):
        negative = data[i] == MINUS
        i += 1
    start = i
    mantissa, digits, exp10, seen = np.uint64(0), 0, 0, False
    fraction = False
    while i < end:
        digit = np.int64(data[i]) - ZERO
        if 0 <= digit <= 9:
            seen = True
            if digits or digit:
                mantissa = mantissa * np.uint64(10) + np.uint64(digit)
                digits += 1
            exp10 -= fraction
        elif data[i] == POINT and not fraction:
            fraction = True
        else:
            break
        i += 1
    if not seen:
        return False, 0.0, i
    if i < end and data[i] | 32 == ord("e"):
        i += 1
        sign = 1
        if i < end and (data[i] == MINUS or data[i] == PLUS):
            sign = -1 if data[i] == MINUS else 1
            i += 1
        exponent, seen = 0, False
        while i < end and 0 <= np.int64(data[i]) - ZERO <= 9:
            exponent = min(exponent * 10 + np.int64(data[i]) - ZERO, 1_000_000)
            seen = True
            i += 1
        if not seen:
            return False, 0.0, i
        exp10 += sign * exponent
    exact, value = decimal_to_float(mantissa, digits, exp10)
    if not exact:
        value = _python_float(data, start, i)
    while i < end and _is_cell_space(data[i], delimiter):
        i += 1
    return True, -value if negative else value, i


@njit(cache=True, nogil=True)
def parse_events(data, start, end, final, delimiter, roles, t_scale, width, height, words):
    """Events from the lines of data[start:end] (uint8) into ``words`` (int64, 2 per event).

    ``roles[c]``: the fields column c holds (T_ROLE | X_ROLE ...), one entry per column up to the
    last used one; ``t_scale``: t unit in us; a last line without ``\\n`` is read only when
    ``final``. Returns (status, position, count, detail): ``count`` events written; ``position``
    is the start of the first line not read (OK), or of the offending line (errors). ``detail``:
    the column of BAD_NUMBER, the number of columns found for FEW_COLUMNS. OUT_OF_RANGE: t * t_scale
    not below 2**62 us in magnitude, |x| or |y| not below 32768, or p not finite. An event outside
    the width x height sensor is written as event ``count`` with status OUTSIDE_SENSOR.
    """
    columns = len(roles)
    count = 0
    i = start
    while 2 * count + 1 < len(words):
        line = i
        while i < end and (data[i] == SPACE or 9 <= data[i] <= 13) and data[i] != NEWLINE:
            i += 1
        if i == end:  # nothing but whitespace left
            return OK, end if final else line, count, 0
        if data[i] == NEWLINE:  # blank line
            i += 1
            continue
        skip = data[line] == HASH  # a comment line
        i = line
        t = x = y = p = 0.0
        column = 0
        while not skip:  # cells
            if roles[column]:
                ok, value, i = read_number(data, i, end, delimiter)
                if i == end and not final:
                    return OK, line, count, 0
                if not ok or (i < end and data[i] != delimiter and data[i] != NEWLINE
                              and data[i] != CR and data[i] != HASH):
                    return BAD_NUMBER, line, count, column
                role = roles[column]
                if role & T_ROLE:
                    t = value
                if role & X_ROLE:
                    x = value
                if role & Y_ROLE:
                    y = value
                if role & P_ROLE:
                    p = value
            else:
                while i < end and data[i] != delimiter and data[i] != NEWLINE and data[i] != CR \
                        and data[i] != HASH:
                    i += 1
            if i < end and data[i] == delimiter:
                i += 1
                column += 1
                if column == columns:
                    break
            elif column < columns - 1:
                if i == end and not final:
                    return OK, line, count, 0
                return FEW_COLUMNS, line, count, column + 1
            else:
                break
        comment = skip
        while i < end and data[i] != NEWLINE:  # rest of the line
            if data[i] == HASH:
                comment = True
            elif data[i] == CR and not comment and i + 1 < end and data[i + 1] != NEWLINE:
                return STRAY_CR, line, count, 0
            i += 1
        if i < end:
            i += 1  # past the newline
        elif not final:
            return OK, line, count, 0
        if skip:
            continue
        t *= t_scale
        if not (abs(t) < T_LIMIT and abs(x) < COORD_LIMIT and abs(y) < COORD_LIMIT
                and abs(p) < np.inf):
            return OUT_OF_RANGE, line, count, 0
        column_x, row_y = np.int64(x), np.int64(y)
        words[2 * count] = np.int64(np.rint(t))
        words[2 * count + 1] = (column_x & 0xFFFF) | (row_y & 0xFFFF) << 16 | np.int64(p > 0) << 32
        if not (0 <= column_x < width and 0 <= row_y < height):
            return OUTSIDE_SENSOR, line, count, 0
        count += 1
    return OK, i, count, 0
