"""The live read-out (``kernels.readout.track_objects``) against a slow, obviously-correct
reference, on generated spike trains fed in pieces and on the real output spikes of the shipped
network watching a continuous stream of real N-MNIST recordings."""

from __future__ import annotations

import math

import numpy as np

from kernels import lif, readout
from kernels.snn_input import map_inputs
from pipeline.core.model import load_model
from pipeline.core.packet import Packetizer, events_packet
from pipeline.core.stage import run_chain
from pipeline.nodes.features import Denoise, DenoiseParams, Hots, HotsParams
from sensors.continuous import concatenate, interleave
from sensors.replay import dataset_files
from tests.conftest import NMNIST_TRAIN, ROOT

MODEL = ROOT / "recordings" / "model.npz"


def slow_track(t, neuron, seen, t_end, n_classes, tau_us, k, k_change, quiet_us):
    """The rule of track_objects written out plainly: a list of transitions (kind, time, class,
    score and margin rounded, onset time, events since the onset, spikes)."""
    rows, evidence, last, is_open, held, over = [], [0.0] * n_classes, None, False, -1, None
    onset = onset_seen = spikes = last_seen = 0
    best_lead = 0.0

    def lead_of(values):
        best = max(range(n_classes), key=lambda c: (values[c], -c))
        others = [values[c] for c in range(n_classes) if c != best]
        return best, values[best] - max(others)

    for i in range(len(t) + 1):
        now = t[i] if i < len(t) else t_end
        if is_open and now - last > quiet_us:
            rows.append((readout.RELEASE, last + quiet_us, held, 0.0, round(best_lead, 6), onset,
                         last_seen - onset_seen, spikes))
            is_open, held, over = False, -1, None
        if i == len(t):
            break
        if is_open:
            evidence = [e * math.exp(-(now - last) / tau_us) for e in evidence]
        else:
            evidence = [0.0] * n_classes
            is_open, onset, onset_seen, spikes, best_lead = True, now, seen[i] - 1, 0, 0.0
        evidence[neuron[i]] += 1.0
        last, last_seen, spikes = now, seen[i], spikes + 1
        best, lead = lead_of(evidence)
        if held < 0:
            best_lead = max(best_lead, lead)
            if lead >= k:
                rows.append((readout.DECIDE, now, best, round(evidence[best], 6), round(lead, 6), onset,
                             seen[i] - onset_seen, spikes))
                held = best
        elif best == held:
            over = None
        else:
            over = over or (now, seen[i] - 1)
            if evidence[best] - evidence[held] >= k_change:
                onset, onset_seen = over
                best_lead, held, over = evidence[best] - evidence[held], best, None
                rows.append((readout.CHANGE, now, best, round(evidence[best], 6), round(best_lead, 6),
                             onset, seen[i] - onset_seen, spikes))
    return rows


def fast_track(t, neuron, seen, t_end, n_classes, tau_us, k, k_change, quiet_us, pieces):
    """track_objects fed in ``pieces`` (packet boundaries), each call closing at its last spike
    and the final one at ``t_end``."""
    evidence, state, rows, start = np.zeros(n_classes), readout.new_track_state(), [], 0
    for stop in pieces:
        part = slice(start, stop)
        now = t_end if stop == len(t) else int(t[stop - 1]) if stop > start else int(t[max(start - 1, 0)])
        out = readout.track_outputs(stop - start)
        n = readout.track_objects(t[part], neuron[part], seen[part], now, evidence, state,
                                  tau_us, k, k_change, quiet_us, out)
        kinds, _, at, cls, score, margin, onset, events, spikes = (o[:n] for o in out)
        rows += [(int(a), int(b), int(c), round(float(d), 6), round(float(e), 6), int(f), int(g), int(h))
                 for a, b, c, d, e, f, g, h in zip(kinds, at, cls, score, margin, onset, events, spikes)]
        start = stop
    return rows


def test_generated_trains_match_the_reference_in_pieces():
    rng = np.random.default_rng(7)
    for trial in range(60):
        n = int(rng.integers(1, 300))
        bursts = np.sort(rng.integers(0, 2_000_000, n))  # gaps from us to hundreds of ms
        t = bursts.astype(np.int64)
        classes = int(rng.integers(2, 5))
        # each burst of spikes is dominated by one class, switching now and then
        dominant = np.repeat(rng.integers(0, classes, n // 20 + 1), 20)[:n]
        neuron = np.where(rng.random(n) < 0.7, dominant, rng.integers(0, classes, n)).astype(np.int64)
        seen = np.cumsum(rng.integers(1, 5, n)).astype(np.int64)
        tau, k, kc, quiet = (float(rng.choice([5e3, 50e3])), float(rng.integers(1, 6)),
                             float(rng.integers(2, 9)), float(rng.choice([1e3, 20e3, 90e3])))
        t_end = int(t[-1]) + int(rng.integers(0, 200_000))
        pieces = sorted(set(rng.integers(1, n + 1, 4).tolist()) | {n})
        want = slow_track(t.tolist(), neuron.tolist(), seen.tolist(), t_end, classes, tau, k, kc, quiet)
        got = fast_track(t, neuron, seen, t_end, classes, tau, k, kc, quiet, pieces)
        assert got == want, trial


def test_hand_worked_decide_change_release():
    # no decay: class 1 leads by 2 at its second spike; class 2 leads from its fourth spike
    # (t = 60) and is 3 ahead at t = 80; 1000 us of silence after the last spike ends it
    t = np.array([0, 10, 20, 30, 40, 50, 60, 70, 80], np.int64)
    neuron = np.array([1, 1, 1, 2, 2, 2, 2, 2, 2], np.int64)
    seen = np.arange(1, 10, dtype=np.int64)
    rows = fast_track(t, neuron, seen, 10_000, 3, math.inf, 2, 3, 1000, [9])
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (readout.DECIDE, 10, 1), (readout.CHANGE, 80, 2), (readout.RELEASE, 1080, 2)]
    assert rows[1][5:7] == (60, 3)  # second object: class 1 stopped leading at t = 60, 3 events ago


def test_real_network_output_matches_the_reference():
    """The shipped network with a 50 ms leak watching six real N-MNIST digits back to back with
    no gap: the kernel and the reference find the same transitions, and six objects are decided."""
    files = interleave(dataset_files(NMNIST_TRAIN)[::150], seed=1)[:6]
    events, shown, width, height = concatenate(files, gap_us=0)
    cutter = Packetizer(1000, 10_000)
    packets = [events_packet("s", i, p, width, height) for i, p in
               enumerate(cutter.push(events) + cutter.flush())]
    hots = HotsParams(radius=2, tau_us=50_000.0, n_prototypes=64, mode="all", in_channels=2,
                      learn=False, prototypes=str(MODEL))
    features = np.concatenate([p.records for p in run_chain(packets, [
        Denoise("denoise", DenoiseParams(duration_us=20_000, per_segment=False)), Hots("hots", hots)])])
    model = load_model(MODEL)
    idx = np.empty(len(features), np.int64)
    map_inputs(features["x"], features["y"], features["f"], model.width, model.height, model.cell,
               model.channels, idx)
    net = lif.make_network(list(model.weights), list(model.thresholds), [50_000.0], resets=list(model.resets))
    spikes = lif.run(net, lif.init_state(net), np.ascontiguousarray(features["t"]), idx)
    t, neuron = spikes["t"].astype(np.int64), spikes["neuron"].astype(np.int64)
    seen = (spikes["src"] + 1).astype(np.int64)
    t_end = int(events["t"][-1]) + 200_000
    want = slow_track(t.tolist(), neuron.tolist(), seen.tolist(), t_end, 10, 50e3, 64, 128, 90e3)
    got = fast_track(t, neuron, seen, t_end, 10, 50e3, 64, 128, 90e3, [len(t) // 3, len(t)])
    assert got == want
    decided = [r for r in got if r[0] in (readout.DECIDE, readout.CHANGE)]
    assert len(decided) == len(shown) == 6
    assert [model.classes[r[2]] for r in decided] == [s.label for s in shown]


def test_track_records_equals_track_objects_on_the_output_spikes():
    """The decoder's entry (snn stage records in, the output layer's spikes picked in the
    kernel) gives the rows of ``track_objects`` on the spikes picked by numpy."""
    from tests.kernels.test_readout import spike_packets

    rng = np.random.default_rng(11)
    packets = spike_packets(rng, 4, 400)
    mine, theirs = (np.zeros(4), readout.new_track_state()), (np.zeros(4), readout.new_track_state())
    kinds = []
    for packet in packets:
        now = int(packet["t"][-1]) if len(packet) else 0
        rows_mine, rows_theirs = readout.track_outputs(len(packet)), readout.track_outputs(len(packet))
        n = readout.track_records(packet, 1, now, *mine, 20e3, 2.0, 3.0, 1500.0, rows_mine)
        spikes = packet[(packet["kind"] == 0) & (packet["layer"] == 1)]
        want = readout.track_objects(spikes["t"].astype(np.int64), spikes["neuron"].astype(np.int64),
                                     spikes["seen"].astype(np.int64), now, *theirs, 20e3, 2.0,
                                     3.0, 1500.0, rows_theirs)
        assert n == want
        kinds += rows_mine[0][:n].tolist()
        for a, b in zip(rows_mine, rows_theirs):
            np.testing.assert_array_equal(a[:n], b[:n])
        np.testing.assert_array_equal(mine[0], theirs[0])
        np.testing.assert_array_equal(mine[1], theirs[1])
    assert set(kinds) == {readout.DECIDE, readout.CHANGE, readout.RELEASE}
