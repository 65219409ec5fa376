"""Sources stamp every packet with its origin (host ns, ``time.time_ns()``): a paced replay and the
synthetic scene when they release it, so origins lie between the moments around the run and no
packet's origin comes before the pacing let it go: the run's start plus its sensor time from the
first packet, divided by the speed."""

from __future__ import annotations

import time

import pytest

from sensors.replay import Replay
from sensors.synthetic import Scene, SyntheticSource
from tests.conftest import ROOT

SAMPLE = min((ROOT / "recordings" / "nmnist" / "3").glob("*.bin"))
SLACK_NS = 200_000  # perf_counter (pacing) and time_ns (origins) may drift apart under NTP slew


@pytest.mark.parametrize("make, speed", [
    (lambda: Replay("replay", SAMPLE, speed=1.0).packets(), 1.0),
    (lambda: Replay("replay", SAMPLE, speed=4.0).packets(), 4.0),
    (lambda: Replay("replay", SAMPLE).packets(), 0.0),
    (lambda: SyntheticSource("synthetic", Scene(rate=2e5), duration_us=100_000).packets(), 1.0),
], ids=["replay x1", "replay x4", "replay unpaced", "synthetic x1"])
def test_each_packet_carries_its_release_time(make, speed):
    before = time.time_ns()
    packets = []
    for packet in make():
        packets.append((packet, time.time_ns()))  # the moment the source let it go, or later
    after = time.time_ns()
    assert len(packets) > 10
    origins = [p.header.origin_ns for p, _ in packets]
    assert before < origins[0] and origins == sorted(origins)
    assert all(p.header.origin_ns <= taken <= after for p, taken in packets)
    if speed:
        t0 = packets[0][0].header.t_last  # the pacing's anchor, set after ``before``
        for packet, _ in packets:
            if len(packet.records):  # empty end markers are not paced
                held = (packet.header.t_last - t0) * 1000 / speed
                assert packet.header.origin_ns - before >= held - SLACK_NS
