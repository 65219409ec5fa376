"""Decision rules and activity segmentation against hand-worked cases and slow references."""

from __future__ import annotations

import math

import numpy as np

from kernels import readout


def slow_count_lead(t, neuron, n_classes, window_us, k):
    for i in range(len(t)):
        inside = [neuron[j] for j in range(i + 1) if window_us <= 0 or t[j] > t[i] - window_us]
        counts = sorted((inside.count(c) for c in range(n_classes)), reverse=True)
        if counts[0] - counts[1] >= k:
            return i
    return -1


def test_count_lead_matches_slow_reference_in_pieces():
    rng = np.random.default_rng(3)
    for trial in range(40):
        n = int(rng.integers(1, 60))
        t = np.sort(rng.integers(0, 1000, n)).astype(np.int64)
        neuron = rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1]).astype(np.int32)
        window, k = int(rng.choice([0, 100, 300])), int(rng.integers(1, 5))
        want = slow_count_lead(t, neuron, 4, window, k)
        counts, lo, got, start = np.zeros(4), 0, -1, 0
        for stop in sorted(set(rng.integers(0, n + 1, 3).tolist()) | {n}):  # fed in packets
            got, lo = readout.count_lead(t[:stop], neuron[:stop], start, lo, window, k, counts)
            start = stop
            if got >= 0:
                break
        assert got == want, (trial, window, k)


def test_first_spike_is_a_lead_of_one():
    t = np.array([5, 7, 9], np.int64)
    neuron = np.array([2, 0, 0], np.int32)
    counts = np.zeros(3)
    assert readout.count_lead(t, neuron, 0, 0, 0, 1, counts)[0] == 0
    assert readout.leader(counts) == (2, 1.0)


def test_leader_margin_and_ties():
    assert readout.leader(np.array([0.2, 0.9, 0.5])) == (1, 0.9 - 0.5)
    best, margin = readout.leader(np.array([0.7, 0.1, 0.7]))
    assert (best, margin) == (0, 0.0)


def test_forced_leader_breaks_ties_by_potential_then_index():
    assert readout.forced_leader(np.array([3, 5, 5]), np.array([9.0, 0.1, 0.2])) == 2
    assert readout.forced_leader(np.array([0, 0, 0]), np.array([0.0, 0.0, 0.0])) == 0


def transitions(t, tau, on, off, state=None):
    state = np.array([0.0, float(t[0]), 0.0]) if state is None else state
    kinds = np.empty(2 * len(t), np.int8)
    times = np.empty(2 * len(t), np.int64)
    where = np.empty(2 * len(t), np.int64)
    n = readout.activity_segments(t, state, tau, on, off, kinds, times, where)
    return list(zip(kinds[:n].tolist(), times[:n].tolist(), where[:n].tolist())), state


def test_activity_segments_hysteresis_and_exact_offset_time():
    # bursts of 1 event/us for 2000 us separated by 100 ms of silence; tau = 1000 us
    burst = np.arange(2000, dtype=np.int64)
    t = np.concatenate([burst, burst + 100_000, burst + 200_000])
    found, state = transitions(t, 1000.0, 0.5, 0.1)
    kinds = [k for k, _, _ in found]
    assert kinds == [readout.ONSET, readout.OFFSET] * 2 + [readout.ONSET]
    # onset when r = 1 - exp(-n/tau) first reaches 0.5: after ln(2) * tau events
    r = 0.0
    for n in range(2000):
        r = r * math.exp(-1 / 1000) + 1 / 1000
        if r >= 0.5:
            break
    assert found[0] == (readout.ONSET, n, n)
    # offset: the trace after the burst's last event decays below 0.1 at last + tau ln(r / 0.1)
    r_last = (1 - math.exp(-2000 / 1000)) / (1 - math.exp(-1 / 1000)) / 1000
    assert found[1][2] == 2000
    assert found[1][1] == math.ceil(1999 + 1000 * math.log(r_last / 0.1))
    assert state[2] == 1.0  # the last burst is still open


def test_activity_segments_split_anywhere_gives_same_transitions():
    rng = np.random.default_rng(0)
    t = np.sort(np.concatenate([rng.integers(0, 50_000, 3000), rng.integers(80_000, 90_000, 800),
                                rng.integers(200_000, 300_000, 4000)])).astype(np.int64)
    whole, _ = transitions(t, 5000.0, 0.02, 0.005)
    state = np.array([0.0, float(t[0]), 0.0])
    pieces = []
    for a, b in [(0, 1234), (1234, 1235), (1235, 5000), (5000, len(t))]:
        found, state = transitions(t[a:b], 5000.0, 0.02, 0.005, state)
        pieces += [(k, tt, i + a) for k, tt, i in found]
    assert pieces == whole
    assert len(whole) >= 4
