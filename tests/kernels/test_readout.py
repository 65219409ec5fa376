"""Decision rules on segments against hand-worked cases and slow references (the live read-out:
tests/kernels/test_live_readout.py)."""

from __future__ import annotations

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
