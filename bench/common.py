"""Shared benchmark helpers: timing, result records, the shared recordings folder."""

from __future__ import annotations

import pathlib
import time

RECORDINGS = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "recordings"


def best_of(fn, repeats: int = 5, warmup: bool = True) -> float:
    """Shortest wall time (s) of ``repeats`` calls to ``fn`` (after one warm-up call: compile, caches)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def record(name: str, ours: float, peer: float, unit: str, target: float | None,
           ratio: float | None = None) -> dict:
    """One result; ``ratio`` defaults to ours / peer (pass it for lower-is-better units)."""
    return dict(name=name, ours=ours, peer=peer, unit=unit,
                ratio=ours / peer if ratio is None else ratio, target=target)
