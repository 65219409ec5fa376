"""Decoders: output spikes and potentials -> class decisions, and activity-based segmentation.

Rules follow the read-outs reviewed by Pfeiffer and Pfeil (2018, "Deep learning with spiking
neurons: opportunities and challenges", Front. Neurosci. 12:774): the first output spike, the
highest spike count (or rate over a window), and outputs tuned to be right early, read as soon as
the evidence justifies it:

- ``count_lead``: spike counts per class, over the whole segment or over a sliding window of
  ``window_us``; decide at the first spike after which the leader is ahead of the runner-up by
  ``k`` spikes. ``k = 1`` without window is the first-spike rule. Below the lead: abstain.
- ``leader`` on membrane potentials: decide when the potential margin (top minus runner-up)
  reaches ``m``.
- ``forced_leader``: the decision at segment end: most spikes, ties broken by the higher
  potential, then by the lower class index (so it always names a class).
- ``activity_segments``: for live streams, an event-rate trace with hysteresis opens a segment
  when the rate reaches ``on`` and closes it when it falls below ``off`` (< on).
"""

from __future__ import annotations

import numpy as np
from numba import njit

ABSTAIN = -1
ONSET = 1
OFFSET = 0


@njit(cache=True, nogil=True)
def leader(scores):
    """(index of the highest score, lowest index on ties; its margin over the runner-up)."""
    best = 0
    for j in range(1, len(scores)):
        if scores[j] > scores[best]:
            best = j
    second = -np.inf
    for j in range(len(scores)):
        if j != best and scores[j] > second:
            second = scores[j]
    return best, scores[best] - second


@njit(cache=True, nogil=True)
def count_lead(t, neuron, start, lo, window_us, k, counts):
    """Count spikes ``start..len(t)`` (times us, class indices) into ``counts`` in order.

    With ``window_us > 0`` only spikes with time > t_i - window_us count (``lo`` is the first
    spike still in the window, kept by the caller between calls). Returns (index of the first
    spike after which the leader's lead reached ``k``, or -1; updated lo)."""
    for i in range(start, len(t)):
        counts[neuron[i]] += 1
        if window_us > 0:
            while t[lo] <= t[i] - window_us:
                counts[neuron[lo]] -= 1
                lo += 1
        best, lead = leader(counts)
        if lead >= k:
            return i, lo
    return -1, lo


@njit(cache=True, nogil=True)
def forced_leader(counts, potentials):
    """The class with most spikes; ties broken by higher potential, then lower index."""
    best = 0
    for j in range(1, len(counts)):
        if counts[j] > counts[best] or (counts[j] == counts[best]
                                         and potentials[j] > potentials[best]):
            best = j
    return best


@njit(cache=True, nogil=True)
def activity_segments(t, state, tau_us, on_rate, off_rate, out_kind, out_t, out_index):
    """Segment a stream by its event rate, with hysteresis.

    The rate trace r (events/us) jumps by 1/tau_us at each event and decays as exp(-dt/tau_us),
    so a steady rate of lambda events/us gives r -> lambda. An onset is reported at the event
    where r reaches ``on_rate``; an offset at the exact time r decays below ``off_rate``
    (reported when the next event shows it happened, with that event's index). ``state`` is
    float64[3] (r after the last event, last time, active flag), updated in place. Writes
    transitions (kind ONSET/OFFSET, time us, event index) to the outputs (room for 2 * len(t));
    returns how many."""
    r, last, active = state[0], state[1], state[2]
    n = 0
    for i in range(len(t)):
        decayed = r * np.exp(-(t[i] - last) / tau_us)
        if active > 0 and decayed < off_rate:
            t_off = last + tau_us * np.log(r / off_rate) if r > off_rate else last
            out_kind[n] = OFFSET
            out_t[n] = np.int64(np.ceil(t_off))
            out_index[n] = i
            n += 1
            active = 0.0
        r = decayed + 1.0 / tau_us
        last = t[i]
        if active == 0 and r >= on_rate:
            out_kind[n] = ONSET
            out_t[n] = t[i]
            out_index[n] = i
            n += 1
            active = 1.0
    state[0], state[1], state[2] = r, last, active
    return n
