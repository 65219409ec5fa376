"""Soak: the synthetic sensor at 1 Mev/s, 640 x 480, through the whole camera-rate graph of
bench/bench_graph.py (scale -> denoise -> hots -> snn -> decoder -> jsonl, the sensor's link
live, the others lossless) for a minute of real time, in worker processes: resident memory
stays flat after warm-up and no lossless link loses a packet. The run and its measurements are
bench/bench_soak.py's (``python -m bench bench_soak --minutes 10`` for the long one)."""

from __future__ import annotations

from bench.bench_soak import GROWTH_GOAL, RATE, soak

SECONDS = 60


def test_a_minute_at_a_million_events_per_second_keeps_memory_flat_and_loses_nothing(tmp_path):
    result = soak(tmp_path, SECONDS)
    assert result.ok, {node: snap["error"] for node, snap in result.snapshots.items() if snap["error"]}
    assert len(result.samples) >= 3
    first, last = result.samples[0], result.samples[-1]
    assert set(first) == set(last) and len(first) >= 2, (first, last)
    for name, growth in result.growth_pct().items():
        assert growth < GROWTH_GOAL, f"{name}: {first[name]} -> {last[name]} KiB"
    assert result.events_in() > 0.9 * SECONDS * RATE  # events taken in
    assert result.lost_behind_lossless() == 0
    assert result.snapshots["decoder"]["e2e_p99_us"] is not None
