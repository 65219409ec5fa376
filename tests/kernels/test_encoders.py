"""Encoders: statistics of the Poisson coder, exact times of the deterministic ones."""

from __future__ import annotations

import math

import numpy as np

from kernels import encoders


def test_poisson_rates_intervals_and_seed():
    rates = np.array([0.0, 50.0, 200.0, 1000.0])
    t, i = encoders.poisson(rates, 20_000_000, seed=4)  # 20 s
    assert np.all(np.diff(t) >= 0) and np.all((t >= 0) & (t < 20_000_000))
    counts = np.bincount(i, minlength=4)
    assert counts[0] == 0
    for j in (1, 2, 3):  # counts within 5 standard deviations of rate * 20 s
        expected = rates[j] * 20
        assert abs(counts[j] - expected) < 5 * math.sqrt(expected)
    isi = np.diff(t[i == 3]).astype(float)  # exponential: mean = sd = 1000 us
    assert abs(isi.mean() - 1000) < 30 and abs(isi.std() - 1000) < 50
    again = encoders.poisson(rates, 20_000_000, seed=4)
    assert np.array_equal(again[0], t) and np.array_equal(again[1], i)
    other = encoders.poisson(rates, 20_000_000, seed=5)
    assert not np.array_equal(other[0][:100], t[:100])


def test_ttfs_linear_and_log():
    x = np.array([0.0, 1.0, 0.5, 0.25, 2.0, -1.0])
    t, i = encoders.ttfs_linear(x, 1.0, 1000)
    assert i.tolist() == [1, 4, 2, 3] and t.tolist() == [0, 0, 500, 750]
    t, i = encoders.ttfs_log(x, 1.0, 1000.0, 1000)
    assert i.tolist() == [1, 4, 2]  # 0.25 -> 1386 us > t_max: no spike
    assert t.tolist() == [0, 0, round(1000 * math.log(2))]


def test_rank_order():
    t, i = encoders.rank_order(np.array([0.1, 0.0, 0.7, 0.7, 0.3]), 10)
    assert i.tolist() == [2, 3, 4, 0] and t.tolist() == [0, 10, 20, 30]
