"""EVT 3.0 encoder: events into the 16-bit words of Prophesee's "EVT 3.0 format" (docs.prophesee.ai).

Word types written (type in bits 12-15): 0x8 TIME_HIGH (bits 12-23 of the time, us), 0x6
TIME_LOW (bits 0-11), 0x0 ADDR_Y (y in bits 0-10; bit 11, the system type, 0), 0x2 ADDR_X (x in
bits 0-10, polarity in bit 11: one event), 0x3 VECT_BASE_X (base x, polarity) followed by 0x4
VECT_12 (bit k set: an event at base x + k, then the base advances by 12).

The encoder keeps the rules that every EVT 3.0 decoder agrees on, so ours (each ``evt3_time``
mode of ``sensors.prophesee``), OpenEB's and faery's decode its words to the same events:

- time only moves forward: an event earlier than the one before it is sent at that one's time
  (the count is returned, EVT 3.0 cannot say "back");
- TIME_HIGH moves forward by at most 2047 counts a word, and crosses the 24-bit wrap only as
  4095 -> 0 (faery takes nothing else for a wrap, OpenEB anything back by 2048 or more), so gaps
  of any length, the start from 0 included, are stepped through;
- a TIME_LOW follows every TIME_HIGH change before the next event, so no decoder's rule for a
  stale low part matters;
- a vector holds events in the input order only: a run of at least 3 events of one time, row and
  polarity whose x increase strictly within 12 columns of the first (decoders emit a vector's
  events from low x to high x).

Each call (one packet) starts with TIME_HIGH, TIME_LOW and ADDR_Y, so a packet decodes on its
own given the number of 24-bit wraps (2**24 us = 16.78 s) before it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

TIME_HIGH, TIME_LOW, ADDR_Y, ADDR_X, VECT_BASE_X, VECT_12 = 0x8, 0x6, 0x0, 0x2, 0x3, 0x4
MAX_STEP = 2047  # TIME_HIGH counts one word may move forward
VECTOR_MIN = 3  # events a vector must hold to be shorter than ADDR_X words (2 words vs 3)


@njit(cache=True, nogil=True)
def _step_high(out, n, high, target):
    """TIME_HIGH words from absolute high count ``high`` (t >> 12, wraps included) to ``target``;
    returns the new word count, or -1 when ``out`` is full."""
    while high < target:
        if high & 0xFFF == 0xFFF:
            high += 1  # the wrap: 4095 -> 0
        else:
            high = min(target, high + MAX_STEP, high | 0xFFF)
        if n >= len(out):
            return -1
        out[n] = (TIME_HIGH << 12) | (high & 0xFFF)
        n += 1
    return n


@njit(cache=True, nogil=True)
def encode_evt3(t, x, y, p, out, state):
    """Encode events (t us >= 0, x and y < 2048 px, p 0/1) into EVT 3.0 words ``out`` (uint16).

    ``state`` int64[2] carries over between packets of one stream, zeros at its start: the
    absolute TIME_HIGH count last written and the time of the last event (us). Returns
    (words written, events sent at an earlier event's time), or (-1, 0) when ``out`` is too small
    (``state`` is then unchanged: call again with a larger ``out``). 4 words an event plus 3 a
    packet always suffice unless TIME_HIGH has to step over gaps (3 words per 16.78 s).
    """
    n_events = len(t)
    if n_events == 0:
        return 0, 0
    high, last = state[0], state[1]
    clamped = 0
    t0 = max(t[0], last)
    n = _step_high(out, 0, high, t0 >> 12)
    if n < 0 or n + 3 > len(out):
        return -1, 0
    high = t0 >> 12
    low = t0 & 0xFFF
    row = y[0]
    out[n] = (TIME_HIGH << 12) | (high & 0xFFF)
    out[n + 1] = (TIME_LOW << 12) | low
    out[n + 2] = (ADDR_Y << 12) | row
    n += 3
    i = 0
    while i < n_events:
        ti = t[i]
        if ti < last:
            clamped += 1
            ti = last
        last = ti
        if ti >> 12 != high:
            n = _step_high(out, n, high, ti >> 12)
            if n < 0:
                return -1, 0
            high = ti >> 12
            low = -1
        if n + 4 > len(out):
            return -1, 0
        if ti & 0xFFF != low:
            low = ti & 0xFFF
            out[n] = (TIME_LOW << 12) | low
            n += 1
        if y[i] != row:
            row = y[i]
            out[n] = (ADDR_Y << 12) | row
            n += 1
        polarity = np.int64(p[i] != 0)
        # the run of events a vector can hold: same time (as given), row, polarity; x rising
        j = i + 1
        while (j < n_events and t[j] == ti and y[j] == row and np.int64(p[j] != 0) == polarity
               and x[j] > x[j - 1] and x[j] - x[i] < 12):
            j += 1
        if j - i >= VECTOR_MIN:
            mask = 0
            for k in range(i, j):
                mask |= 1 << (x[k] - x[i])
            out[n] = (VECT_BASE_X << 12) | (polarity << 11) | x[i]
            out[n + 1] = (VECT_12 << 12) | mask
            n += 2
            i = j
        else:
            out[n] = (ADDR_X << 12) | (polarity << 11) | x[i]
            n += 1
            i += 1
    state[0], state[1] = high, last
    return n, clamped


def encode(events: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, int]:
    """EVT 3.0 words (uint16) of canonical ``events`` (fields t us, x, y, p) and the number of
    events sent at an earlier one's time; ``state`` as ``encode_evt3`` (int64[2], zeros at the
    start of a stream), updated."""
    size = 4 * len(events) + 16
    while True:
        out = np.empty(size, np.uint16)
        n, clamped = encode_evt3(events["t"], events["x"], events["y"], events["p"], out, state)
        if n >= 0:
            return out[:n], clamped
        size *= 2
