"""The numba EVT 3.0 encoder against a slow reference written from the format's rules (Prophesee,
"EVT 3.0 format"), and its words against three decoders: ours (``sensors.prophesee``, modes
faery and openeb) and faery's, on the real recordings and on streams built to be hard (gaps over
24-bit wraps, times that go back, dense rows for vectors)."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.evt3 import encode
from pipeline.core.events import EVENT_DTYPE
from sensors.prophesee import decode_words
from sensors.readers import read_all

WIDTH, HEIGHT = 1280, 720


def reference(events, state=(0, 0)) -> tuple[list[int], tuple[int, int]]:
    """EVT 3.0 words of ``events``, one rule at a time; ``state``: (absolute TIME_HIGH count,
    last time), returned updated."""
    high, last = state
    words = []

    def time_high_to(target):
        nonlocal high
        while high < target:
            if high % 4096 == 4095:
                high += 1  # the wrap goes 4095 -> 0, the one way every decoder reads it
            else:
                high = min(target, high + 2047, high - high % 4096 + 4095)
            words.append(0x8000 + high % 4096)

    times = [max(int(t), last) for t in np.maximum.accumulate(np.r_[last, events["t"]])[1:]]
    time_high_to(times[0] // 4096)
    words += [0x8000 + high % 4096, 0x6000 + times[0] % 4096, int(events["y"][0])]
    low, row = times[0] % 4096, int(events["y"][0])
    i = 0
    while i < len(events):
        t, x, y, p = times[i], int(events["x"][i]), int(events["y"][i]), int(events["p"][i] != 0)
        if t // 4096 != high:
            time_high_to(t // 4096)
            low = None
        if t % 4096 != low:
            low = t % 4096
            words.append(0x6000 + low)
        if y != row:
            row = y
            words.append(y)
        run = [x]
        for j in range(i + 1, len(events)):
            xj = int(events["x"][j])
            if (int(events["t"][j]) == t and int(events["y"][j]) == y and int(events["p"][j] != 0) == p
                    and xj > run[-1] and xj - x < 12):
                run.append(xj)
            else:
                break
        if len(run) >= 3:
            words += [0x3000 + (p << 11) + x, 0x4000 + sum(1 << (xk - x) for xk in run)]
        else:
            run = run[:1]
            words.append(0x2000 + (p << 11) + x)
        i += len(run)
    return words, (high, times[-1])


def decoded(words: np.ndarray, mode: str = "faery") -> np.ndarray:
    return np.concatenate(list(decode_words("<words>", "evt3", np.asarray(words, np.uint16), 0,
                                            WIDTH, HEIGHT, mode)))


def same_events(a, b) -> bool:
    return len(a) == len(b) and all((a[k] == b[k]).all() for k in "txyp")


def hard_stream(seed: int, n: int = 6000) -> np.ndarray:
    """Events with gaps from 0 to several 24-bit wraps, repeated times, dense rows and a few
    times earlier than the event before."""
    rng = np.random.default_rng(seed)
    gaps = rng.choice([0, 0, 0, 1, 7, 4095, 4096, 1 << 23, (1 << 24) + 5, 3 << 24],
                      n, p=[.4, .2, .1, .1, .08, .04, .03, .02, .02, .01])
    events = np.zeros(n, EVENT_DTYPE)
    events["t"] = 4090 * 4096 + np.cumsum(gaps)  # starts above 4093: a first TIME_HIGH faery ignores
    events["x"] = rng.integers(0, WIDTH, n)
    events["y"] = np.where(rng.random(n) < 0.7, 360, rng.integers(0, HEIGHT, n))
    events["p"] = rng.random(n) < 0.5
    back = rng.random(n) < 0.01
    events["t"][back] -= 3
    for i in np.flatnonzero((np.arange(n) % 5 > 0) & (rng.random(n) < 0.7)):  # runs for vectors
        events[i] = events[i - 1]
        events["x"][i] = min(events["x"][i - 1] + 2, WIDTH - 1)
    return events


@pytest.fixture(scope="module")
def real(recordings):
    return [read_all(recordings / "prophesee" / name)[1]
            for name in ("evt3_sample.raw", "evt3_test_pedestrians.raw")]


def test_words_equal_the_reference_on_real_recordings_in_packets(real):
    for events in real:
        part = events[:40_000]
        state = np.zeros(2, np.int64)
        ref_state = (0, 0)
        for start in range(0, len(part), 7_000):
            words, clamped = encode(part[start:start + 7_000], state)
            expected, ref_state = reference(part[start:start + 7_000], ref_state)
            assert words.tolist() == expected
            assert clamped == 0
            assert tuple(state) == ref_state


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_words_equal_the_reference_on_hard_streams(seed):
    events = hard_stream(seed)
    state = np.zeros(2, np.int64)
    words, clamped = encode(events, state)
    expected, _ = reference(events)
    assert words.tolist() == expected
    assert clamped == int(np.count_nonzero(events["t"][1:] < np.maximum.accumulate(events["t"])[:-1]))
    vectors = int(np.count_nonzero(words >> 12 == 0x4))
    assert vectors > 100  # the dense rows did produce vectors


@pytest.mark.parametrize("mode", ["faery", "openeb"])
def test_our_decoder_gives_back_the_real_events(real, mode):
    for events in real:
        state = np.zeros(2, np.int64)
        words = np.concatenate([encode(events[s:s + 10_000], state)[0] for s in range(0, len(events), 10_000)])
        assert same_events(decoded(words, mode), events)
        assert len(words) < 3 * len(events)  # vectors make dense data smaller than ADDR_X words


def test_our_decoder_gives_back_hard_streams_with_times_clamped_forward():
    events = hard_stream(4)
    words, _ = encode(events, np.zeros(2, np.int64))
    expected = events.copy()
    expected["t"] = np.maximum.accumulate(events["t"])
    assert expected["t"][-1] > 5 << 24  # several wraps crossed
    for mode in ("faery", "openeb"):
        assert same_events(decoded(words, mode), expected)


def test_faery_decodes_the_words_to_the_real_events(real, tmp_path):
    from faery.extension import evt

    for events in real:
        words, _ = encode(events, np.zeros(2, np.int64))
        path = tmp_path / "encoded.raw"
        path.write_bytes(b"% evt 3.0\n% format EVT3;height=720;width=1280\n% end\n" + words.tobytes())
        with evt.Decoder(path, (WIDTH, HEIGHT), None) as decoder:
            theirs = np.concatenate([p["events"] for p in decoder if "events" in p])
        assert len(theirs) == len(events)
        for ours, field in (("t", "t"), ("x", "x"), ("y", "y"), ("p", "on")):
            assert (events[ours] == theirs[field].astype(np.int64)).all(), field


def test_a_full_buffer_is_reported_and_leaves_the_state_alone():
    from kernels.evt3 import encode_evt3

    events = hard_stream(5, 200)
    state = np.zeros(2, np.int64)
    out = np.empty(10, np.uint16)
    n, _ = encode_evt3(events["t"], events["x"], events["y"], events["p"], out, state)
    assert n == -1 and not state.any()
