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


def spike_packets(rng, n_classes, n_packets):
    """Packets of snn stage records: spikes of a hidden (0) and the output layer (1), sorted in
    time, each packet but some followed by one potential sample per class."""
    from pipeline.nodes.snn import SAMPLE, SPIKE, SPIKE_DTYPE

    packets, t, seen = [], 0, 0
    for _ in range(n_packets):
        n = int(rng.integers(0, 8))
        spikes = np.zeros(n, SPIKE_DTYPE)
        spikes["t"] = t + np.sort(rng.integers(0, 1000, n))
        spikes["seen"] = seen + np.sort(rng.integers(1, 20, n))
        spikes["layer"] = rng.integers(0, 2, n)
        spikes["neuron"] = rng.choice(n_classes, n, p=[0.4, 0.3, 0.2, 0.1])
        spikes["kind"] = SPIKE
        t, seen = t + 1000, seen + 20
        samples = np.zeros(n_classes if rng.random() < 0.8 else 0, SPIKE_DTYPE)
        samples["t"], samples["seen"], samples["kind"] = t, seen, SAMPLE
        samples["neuron"], samples["layer"] = np.arange(len(samples)), 1
        samples["v"] = rng.normal(0, 1, len(samples))
        packets.append(np.concatenate([spikes, samples]))
    return packets


def test_segment_packet_counts_samples_and_decides_as_count_lead():
    rng = np.random.default_rng(5)
    for trial in range(40):
        packets = spike_packets(rng, 4, int(rng.integers(1, 12)))
        window, k = int(rng.choice([0, 100, 3000])), int(rng.integers(1, 4))
        records = np.concatenate(packets)
        output = records[(records["kind"] == 0) & (records["layer"] == 1)]
        want = slow_count_lead(output["t"], output["neuron"], 4, window, k)
        counts, rule_counts, potentials = np.zeros(4, np.int64), np.zeros(4), np.zeros(4)
        history = (np.empty(len(records), np.int64), np.empty(len(records), np.int32),
                   np.empty(len(records), np.int64))
        cursor = np.zeros(readout.SEGMENT_CURSOR_SIZE, np.int64)
        got, sampled = -1, None
        for packet in packets:
            i = readout.segment_packet(packet, 1, got < 0, window, k, counts, rule_counts,
                                       potentials, *history, cursor)
            got = i if got < 0 else got
            samples = packet[packet["kind"] == 1]
            assert cursor[readout.SAMPLED] == (len(samples) > 0)
            sampled = samples if len(samples) else sampled
        assert got == want, (trial, window, k)
        if got >= 0:
            assert (history[0][got], history[2][got]) == (output["t"][got], output["seen"][got])
        np.testing.assert_array_equal(counts, np.bincount(output["neuron"], minlength=4))
        if sampled is not None:
            np.testing.assert_array_equal(potentials, sampled["v"].astype(np.float64))
            assert (cursor[readout.SEEN], cursor[readout.SAMPLE_T]) == (sampled["seen"][-1],
                                                                         sampled["t"][-1])
