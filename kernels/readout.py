"""Read-out: output spikes and potentials -> class decisions, with and without segment markers.

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

from kernels.lif import SAMPLE, SPIKE

ABSTAIN = -1


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


# slots of ``segment_packet``'s cursor (int64[SEGMENT_CURSOR_SIZE]): spikes in the history, the
# first of them still in the rule's window, input events seen at the last potential sample,
# whether the last packet held samples (1) or not (0), the time of its samples (us)
HISTORY, LO, SEEN, SAMPLED, SAMPLE_T = range(5)
SEGMENT_CURSOR_SIZE = 5


@njit(cache=True, nogil=True)
def segment_packet(records, output_layer, counting, window_us, k, counts, rule_counts,
                   potentials, hist_t, hist_neuron, hist_seen, cursor):
    """One packet of an snn stage's records (fields t us, seen, neuron, v, layer and kind, as
    ``kernels.lif.run_packet`` writes them) read into a segment's state in one compiled call.

    Each spike of ``output_layer`` adds 1 to ``counts`` (int64 per class); the potential samples
    replace ``potentials`` (float64 per class, in their order), and the last one's seen and time
    go to ``cursor[SEEN]`` and ``cursor[SAMPLE_T]``; ``cursor[SAMPLED]`` says whether there were
    any. With ``counting`` the spikes are also appended to the history (``hist_t`` us,
    ``hist_neuron``, ``hist_seen``; ``cursor[HISTORY]`` of them, room needed for one per
    record) and counted by ``count_lead`` (``window_us``, ``k``, ``rule_counts``, ``cursor[LO]``).
    Returns the history index of the spike after which the leader was ahead by ``k``, or -1.
    """
    n = start = cursor[HISTORY]
    sampled = 0
    for r in range(len(records)):
        record = records[r]
        if record.kind == SPIKE and record.layer == output_layer:
            neuron = record.neuron
            if neuron < 0 or neuron >= len(counts):
                raise ValueError("an output spike's neuron is not a class")
            counts[neuron] += 1
            if counting:
                hist_t[n], hist_neuron[n], hist_seen[n] = record.t, neuron, record.seen
                n += 1
        elif record.kind == SAMPLE:
            if sampled == len(potentials):
                raise ValueError("more potential samples than classes")
            potentials[sampled] = record.v
            cursor[SEEN], cursor[SAMPLE_T] = record.seen, record.t
            sampled += 1
    cursor[HISTORY], cursor[SAMPLED] = n, sampled > 0
    if n == start:
        return -1
    i, cursor[LO] = count_lead(hist_t[:n], hist_neuron[:n], start, cursor[LO], window_us, k,
                               rule_counts)
    return i


# transitions reported by track_objects
DECIDE = 1  # an object's first decision: its leader is ahead by k
CHANGE = 2  # a new object, found because another class overtook the decided one by k_change
RELEASE = 3  # an object ended: no output spike for quiet_us

# slots of track_objects' state (float64[10])
(_LAST, _LAST_SEEN, _OPEN, _HELD, _ONSET_T, _ONSET_SEEN, _OVER_T, _OVER_SEEN, _SPIKES,
 _BEST_LEAD) = range(10)
TRACK_STATE_SIZE = 10
TRACK_OUTPUTS = 9  # arrays track_objects writes its rows into


def new_track_state() -> np.ndarray:
    """Initial state of ``track_objects``: no object open, nothing decided."""
    state = np.zeros(TRACK_STATE_SIZE)
    state[_HELD] = ABSTAIN
    state[_OVER_T] = -1.0
    return state


def track_outputs(n_spikes: int) -> tuple:
    """Empty output arrays of ``track_objects`` for ``n_spikes`` spikes, in argument order:
    kind, index, time, class (int64), score, margin (float64), onset, events, spikes (int64)."""
    room = 2 * n_spikes + 1
    ints = [np.empty(room, np.int64) for _ in range(7)]
    return (*ints[:4], np.empty(room), np.empty(room), *ints[4:])


@njit(cache=True, nogil=True)
def _row(rows, n, kind, index, at, cls, score, margin, onset, events, spikes):
    kinds, where, times, classes, scores, margins, onsets, counts, spike_counts = rows
    kinds[n], where[n], times[n], classes[n] = kind, index, at, cls
    scores[n], margins[n], onsets[n], counts[n], spike_counts[n] = score, margin, onset, events, spikes
    return n + 1


@njit(cache=True, nogil=True)
def track_objects(t, neuron, seen, t_now, evidence, state, tau_us, k, k_change, quiet_us, rows):
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

    ``rows`` (``track_outputs``) receives one row per transition: kind, spike index (``len(t)``
    for a release due at ``t_now``), time (us), class (``ABSTAIN`` for the release of an
    undecided object), score (the class's evidence), margin (its lead; for a release, the best
    lead the object ever reached), onset time (us), input events since the onset (up to the
    deciding spike, or to the last spike for a release) and the object's output spikes.
    Returns the number of rows.
    """
    n = 0
    for i in range(len(t) + 1):
        now = t[i] if i < len(t) else t_now
        if state[_OPEN] > 0 and now - state[_LAST] > quiet_us:
            n = _row(rows, n, RELEASE, i, np.int64(state[_LAST] + quiet_us), np.int64(state[_HELD]),
                     0.0, state[_BEST_LEAD], np.int64(state[_ONSET_T]),
                     np.int64(state[_LAST_SEEN] - state[_ONSET_SEEN]), np.int64(state[_SPIKES]))
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
        state[_LAST], state[_LAST_SEEN] = now, seen[i]
        state[_SPIKES] += 1.0
        best, lead = leader(evidence)
        held = np.int64(state[_HELD])
        if held == ABSTAIN:
            state[_BEST_LEAD] = max(state[_BEST_LEAD], lead)
            if lead >= k:
                n = _row(rows, n, DECIDE, i, now, best, evidence[best], lead,
                         np.int64(state[_ONSET_T]), np.int64(seen[i] - state[_ONSET_SEEN]),
                         np.int64(state[_SPIKES]))
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
                n = _row(rows, n, CHANGE, i, now, best, evidence[best], gap,
                         np.int64(state[_ONSET_T]), np.int64(seen[i] - state[_ONSET_SEEN]),
                         np.int64(state[_SPIKES]))
    return n


@njit(cache=True, nogil=True)
def track_records(records, output_layer, t_now, evidence, state, tau_us, k, k_change, quiet_us,
                  rows):
    """``track_objects`` over the spikes of ``output_layer`` in a packet of snn stage records
    (fields t us, seen, neuron, layer and kind, as ``kernels.lif.run_packet`` writes them), in one
    compiled call; ``rows`` (``track_outputs``) needs room for ``2 * len(records) + 1`` rows.
    Returns the number of rows."""
    m = 0
    for r in range(len(records)):
        m += records[r].kind == SPIKE and records[r].layer == output_layer
    t, neuron, seen = np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m, np.int64)
    m = 0
    for r in range(len(records)):
        record = records[r]
        if record.kind == SPIKE and record.layer == output_layer:
            t[m], neuron[m], seen[m] = record.t, record.neuron, record.seen
            m += 1
    return track_objects(t, neuron, seen, t_now, evidence, state, tau_us, k, k_change, quiet_us,
                         rows)
