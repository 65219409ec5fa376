"""A dataset folder with damaged recordings between good ones: the damaged files are skipped with
an error naming them, and every segment id (and so every decision) belongs to its own good file."""

from __future__ import annotations

import logging
import shutil

import pytest

from pipeline.learn.evaluate import evaluate
from pipeline.runtime.config import load
from pipeline.runtime.graph import run
from sensors.replay import Replay, dataset_files
from tests.conftest import NMNIST_TRAIN, ROOT
from tests.pipeline.helpers import linked, write_config

MODEL = ROOT / "recordings" / "model.npz"


@pytest.fixture
def damaged_dataset(recordings, tmp_path):
    """Class folders 0, 1, 2 of real N-MNIST samples; in 1, a truncated copy of a sample sorts
    between the good ones; in 2, a garbage file sorts first. Returns (root, good files, bad files)
    with the files as (class, name)."""
    good, bad = [], []
    for digit in "012":
        source = next(p for p in NMNIST_TRAIN.iterdir() if p.name.strip() == digit)
        samples = sorted(source.glob("*.bin"))[:2]
        folder = tmp_path / "data" / digit
        folder.mkdir(parents=True)
        for sample in samples:
            shutil.copy(sample, folder / sample.name)
            good.append((digit, sample.name))
        if digit == "1":  # between the two good samples of class 1
            name = samples[0].stem + "_cut.bin"
            (folder / name).write_bytes(samples[0].read_bytes()[:1003])  # not whole 5-byte records
            bad.append((digit, name))
        if digit == "2":
            (folder / "00000.bin").write_bytes(b"\x00garbage")
            bad.append((digit, "00000.bin"))
    order = [(f.label, f.path.rsplit("/", 1)[1]) for f in dataset_files(tmp_path / "data")]
    assert order.index(bad[0]) == order.index(good[2]) + 1 and order.index(bad[1]) == order.index(good[4]) - 1
    return tmp_path / "data", good, bad


def test_replay_gives_segment_ids_only_to_files_that_produced_packets(damaged_dataset, caplog):
    root, good, bad = damaged_dataset
    replay = Replay("replay", root)
    with caplog.at_level(logging.ERROR, logger="sensors.replay"):
        packets = list(replay.packets())
    segments = {}
    for packet in packets:
        segment = packet.header.segment
        segments.setdefault(segment.id, set()).add((segment.label, segment.name))
    assert sorted(segments) == list(range(len(good)))
    assert [segments[i] for i in range(len(good))] == [{g} for g in good]
    assert [p.header.segment.id for p in packets if p.header.segment.end] == list(range(len(good)))
    assert len(replay.skipped) == 2
    for (digit, name), error in zip(bad, replay.skipped):
        assert str(root / digit / name) in error
        assert any(str(root / digit / name) in message for message in caplog.messages)


def test_evaluation_attributes_every_decision_to_its_own_file(damaged_dataset):
    root, good, _ = damaged_dataset
    result = evaluate(MODEL, dataset_files(root), desc="")
    assert result.metrics["n_samples"] == len(good)
    assert result.streamed.labels == [digit for digit, _ in good]
    for records in (result.decisions, result.finals):
        for record in records:
            assert (record["label"], record["segment_name"]) == good[record["segment"]]
    assert sorted({r["segment"] for r in result.finals}) == list(range(len(good)))  # one per sample at least


def test_a_looping_replay_of_unreadable_files_fails_naming_them(damaged_dataset, tmp_path, caplog):
    """Skipping bad files keeps a dataset going; when no file at all can be read, the replay
    node fails (the run exits 1) in one line naming the path, even when it loops."""
    _, _, bad = damaged_dataset
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    for digit, name in bad:
        shutil.copy(damaged_dataset[0] / digit / name, only_bad / f"{digit}_{name}")
    config = write_config(tmp_path / "graph.toml", f"""
[graph]
summary = false
runner = "threads"

[source.replay]
type = "replay"
path = "{only_bad}"
loop = true

[sink.record]
type = "npy"
path = "{tmp_path / 'out.npy'}"
""" + linked("replay -> record"))
    with caplog.at_level(logging.ERROR):
        result = run(load(config))
    assert result.exit_code == 1
    failure = [m for m in caplog.messages if m.startswith("node 'replay' stopped in run")]
    assert failure == [f"node 'replay' stopped in run: {only_bad}: no recording could be read "
                       f"(2 unreadable, each logged)"], caplog.messages
    assert not any("Traceback" in m for m in caplog.messages)
