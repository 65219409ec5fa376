"""EVT 3.0 time words beyond what the real recordings hold, decoded by faery and by us.

The real files only show TIME_LOW steps back and no 24-bit wrap; this stream (seeded) also has
TIME_HIGH wraps (4095 -> 0), steps back, repeats and jumps, so the default ``evt3_time="faery"``
is checked word type by word type against faery itself, events and trigger times alike.
"""

from __future__ import annotations

import numpy as np

from sensors.prophesee import read_triggers
from sensors.readers import read_all

WIDTH, HEIGHT = 1280, 720


def time_words_stream(rng, count: int) -> list[int]:
    """EVT 3.0 words: events in range, triggers, and TIME_HIGH moving like a sensor's and not."""
    words, high = [], 4000
    for _ in range(count):
        r = rng.random()
        if r < 0.15:
            step = rng.random()
            high = ((high + 1) % 4096 if step < 0.7 else int(rng.integers(0, 4096)) if step < 0.75
                    else 4093 if step < 0.8 else max(high - int(rng.integers(1, 6)), 0) if step < 0.9
                    else high)
            words.append(0x8000 | high)
        elif r < 0.35:
            words.append(0x6000 | int(rng.integers(0, 4096)))
        elif r < 0.45:
            words.append(0x0000 | int(rng.integers(0, HEIGHT)))
        elif r < 0.65:
            words.append(0x2000 | int(rng.integers(0, 2)) << 11 | int(rng.integers(0, WIDTH)))
        elif r < 0.95:  # a vector group that stays inside the sensor
            words.append(0x3000 | int(rng.integers(0, 2)) << 11 | int(rng.integers(0, WIDTH - 20)))
            words.append(0x4000 | int(rng.integers(0, 1 << 12)))
            words.append(0x5000 | int(rng.integers(0, 1 << 8)))
        else:
            words.append(0xA000 | int(rng.integers(0, 16)) << 8 | int(rng.integers(0, 2)))
    return words


def test_evt3_default_equals_faery_on_wraps_and_steps_back(tmp_path):
    from faery.extension import evt

    words = time_words_stream(np.random.default_rng(2024), 40_000)
    path = tmp_path / "time_words.raw"
    path.write_bytes(b"% evt 3.0\n% format EVT3;height=720;width=1280\n% end\n"
                     + np.asarray(words, "<u2").tobytes())
    with evt.Decoder(path, (WIDTH, HEIGHT), None) as decoder:
        packets = list(decoder)
    theirs = np.concatenate([p["events"] for p in packets if "events" in p])
    their_triggers = np.concatenate([p["triggers"] for p in packets if "triggers" in p])
    highs = [w & 0xFFF for w in words if w >> 12 == 0x8]
    assert sum(1 for a, b in zip(highs, highs[1:]) if (a, b) == (4095, 0)) >= 10
    assert theirs["t"][-1] > 10 << 24

    _, ours = read_all(path)
    assert len(ours) == len(theirs)
    for ours_field, field in (("t", "t"), ("x", "x"), ("y", "y"), ("p", "on")):
        assert (ours[ours_field] == theirs[field].astype(np.int64)).all(), field
    triggers = read_triggers(path)
    assert (triggers["t"] == their_triggers["t"].astype(np.int64)).all()
    assert (triggers["id"] == their_triggers["source"]).all()
    assert (triggers["value"] == their_triggers["rising"]).all()
