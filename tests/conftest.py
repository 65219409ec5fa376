"""Shared fixtures: the real recordings in ../shared/recordings (see its MANIFEST.md)."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
RECORDINGS = (ROOT.parent / "shared" / "recordings").resolve()
AEDAT4_SAMPLE = RECORDINGS / "aedat4" / "dvxplorer_sample.aedat4"
NMNIST_TRAIN = RECORDINGS / "nmnist" / "Train"


@pytest.fixture(scope="session")
def recordings() -> pathlib.Path:
    if not RECORDINGS.is_dir():
        pytest.fail(f"real recordings not found at {RECORDINGS}")
    return RECORDINGS
