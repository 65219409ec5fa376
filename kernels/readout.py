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
- ``track_objects``: for streams without segment markers, finds the objects in the output spikes
  themselves: a leaky per-class evidence trace decides an object once the leader is ahead by
  ``k``, a new object once another class overtakes the decided one by ``k_change``, and an
  object ends after ``quiet_us`` without output spikes (docs/snn.md, "Live read-out").
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


# transitions reported by track_objects
DECIDE = 1  # an object's first decision: its leader is ahead by k
CHANGE = 2  # a new object, found because another class overtook the decided one by k_change
RELEASE = 3  # an object ended: no output spike for quiet_us

# slots of track_objects' state (float64[9])
_LAST, _OPEN, _HELD, _ONSET_T, _ONSET_SEEN, _OVER_T, _OVER_SEEN, _SPIKES, _BEST_LEAD = range(9)
TRACK_STATE_SIZE = 9


def new_track_state() -> np.ndarray:
    """Initial state of ``track_objects``: no object open, nothing decided."""
    state = np.zeros(TRACK_STATE_SIZE)
    state[_HELD] = ABSTAIN
    state[_OVER_T] = -1.0
    return state


@njit(cache=True, nogil=True)
def track_objects(t, neuron, seen, t_now, evidence, state, tau_us, k, k_change, quiet_us,
                  kinds, where, at, cls, margin, onset_t, onset_seen, spikes):
    """Objects and their decisions in a stream of output spikes with no segment markers.

    Inputs: spike times ``t`` (us, sorted), output neuron (class) ``neuron``, ``seen`` (input
    events the network had received when the spike happened, running total), ``t_now`` (us, the
    stream's time after the last spike: a release may be due then even without spikes).
    ``evidence`` (float64[n_classes]) and ``state`` (``new_track_state``) persist between calls.

    Rule, per spike in order:

    1. an object is open while output spikes follow each other by at most ``quiet_us``; the
       first spike after a silence opens one (onset = its time) and clears the evidence; a
       silence longer than ``quiet_us`` ends it (RELEASE at last spike + ``quiet_us``);
    2. evidence ``E_c`` decays as exp(-dt / tau_us) and each spike adds 1 to its class;
    3. undecided object: DECIDE when the leader's lead over the runner-up reaches ``k``;
    4. decided object (class h): CHANGE, a new object of class c, when ``E_c - E_h >= k_change``;
       its onset is the first spike since which h has not been the leader.

    Writes one row per transition into the outputs (room for ``2 * len(t) + 1``): kind, spike
    index (``len(t)`` for a release due at ``t_now``), time (us), class (``ABSTAIN`` for the
    release of an undecided object), margin (lead at the decision; best lead ever reached for a
    release), onset time (us) and ``seen`` at the onset (events before the object), and the
    object's spike count. Returns the number of rows.
    """
    n = 0
    for i in range(len(t) + 1):
        now = t[i] if i < len(t) else t_now
        if state[_OPEN] > 0 and now - state[_LAST] > quiet_us:
            kinds[n], where[n], at[n] = RELEASE, i, np.int64(state[_LAST] + quiet_us)
            cls[n], margin[n] = np.int64(state[_HELD]), state[_BEST_LEAD]
            onset_t[n], onset_seen[n] = np.int64(state[_ONSET_T]), np.int64(state[_ONSET_SEEN])
            spikes[n] = np.int64(state[_SPIKES])
            n += 1
            state[_OPEN], state[_HELD], state[_OVER_T] = 0.0, ABSTAIN, -1.0
        if i == len(t):
            break
        if state[_OPEN] > 0:
            evidence *= np.exp(-(now - state[_LAST]) / tau_us)
        else:
            evidence[:] = 0.0
            state[_OPEN], state[_ONSET_T], state[_ONSET_SEEN] = 1.0, now, seen[i] - 1
            state[_SPIKES], state[_BEST_LEAD] = 0.0, 0.0
        evidence[neuron[i]] += 1.0
        state[_LAST] = now
        state[_SPIKES] += 1.0
        best, lead = leader(evidence)
        held = np.int64(state[_HELD])
        if held == ABSTAIN:
            state[_BEST_LEAD] = max(state[_BEST_LEAD], lead)
            if lead >= k:
                kinds[n], where[n], at[n], cls[n], margin[n] = DECIDE, i, now, best, lead
                onset_t[n], onset_seen[n] = np.int64(state[_ONSET_T]), np.int64(state[_ONSET_SEEN])
                spikes[n] = np.int64(state[_SPIKES])
                n += 1
                state[_HELD] = best
        elif best == held:
            state[_OVER_T] = -1.0
        else:
            if state[_OVER_T] < 0:
                state[_OVER_T], state[_OVER_SEEN] = now, seen[i] - 1
            gap = evidence[best] - evidence[held]
            if gap >= k_change:
                state[_ONSET_T], state[_ONSET_SEEN] = state[_OVER_T], state[_OVER_SEEN]
                state[_HELD], state[_OVER_T], state[_BEST_LEAD] = best, -1.0, gap
                kinds[n], where[n], at[n], cls[n], margin[n] = CHANGE, i, now, best, gap
                onset_t[n], onset_seen[n] = np.int64(state[_ONSET_T]), np.int64(state[_ONSET_SEEN])
                spikes[n] = np.int64(state[_SPIKES])
                n += 1
    return n
