"""`evpipe info` and `evpipe convert` on a folder of recordings: on a real Dask LocalCluster
(worker processes) they print and write what they do in one process, a damaged file is reported
once, and reader options and schedulers they cannot use are refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.cli.main import main
from sensors.readers import read_all
from tests.pipeline.test_train_eval import BUNDLED, evpipe

SCHEDULERS = ("none", "local:2")
LOGGED = "ERROR pipeline.learn.cluster"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Classes 0 and 1 of the bundled N-MNIST samples, with a garbage file among those of class
    1. Returns (folder, damaged file, good files in path order)."""
    root = tmp_path_factory.mktemp("recordings") / "nmnist"
    for digit in "01":
        shutil.copytree(BUNDLED / digit, root / digit)
    damaged = root / "1" / "00005.bin"
    damaged.write_bytes(b"\x00garbage")
    good = sorted(p for p in root.rglob("*.bin") if p != damaged)
    return root, damaged, good


def test_info_on_a_local_cluster_prints_what_one_process_prints(folder):
    root, damaged, good = folder
    runs = {scheduler: evpipe("info", root, "--scheduler", scheduler) for scheduler in SCHEDULERS}
    for scheduler, done in runs.items():
        assert done.returncode == 2, (scheduler, done.stderr)  # a file could not be read
        assert "Traceback" not in done.stderr
        assert done.stderr.count(str(damaged)) == 1 and done.stderr.count(LOGGED) == 1, done.stderr
    assert runs["local:2"].stdout == runs["none"].stdout
    blocks = runs["none"].stdout.split("\n\n")
    assert [block.splitlines()[0].split(": ")[1] for block in blocks] == list(map(str, good))
    assert "      events: 5028" in blocks[0]


def test_convert_on_a_local_cluster_writes_the_files_of_one_process(folder, tmp_path):
    root, damaged, good = folder
    outs = {scheduler: tmp_path / scheduler.replace(":", "") for scheduler in SCHEDULERS}
    runs = {scheduler: evpipe("convert", root, out, "--suffix", ".aedat4", "--scheduler", scheduler)
            for scheduler, out in outs.items()}
    for scheduler, done in runs.items():
        assert done.returncode == 2, (scheduler, done.stderr)
        assert done.stderr.count(str(damaged)) == 1 and done.stderr.count(LOGGED) == 1, done.stderr
    assert runs["local:2"].stdout.replace(str(outs["local:2"]), "OUT") == \
        runs["none"].stdout.replace(str(outs["none"]), "OUT")
    written = {scheduler: sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
               for scheduler, out in outs.items()}
    expected = [p.relative_to(root).with_suffix(".aedat4") for p in good]
    assert written["none"] == written["local:2"] == expected
    for name in expected:
        assert (outs["none"] / name).read_bytes() == (outs["local:2"] / name).read_bytes()


def test_a_folder_in_one_process_converts_to_npz_and_describes_as_json_lines(folder, tmp_path,
                                                                             capsys):
    root, _, good = folder
    assert main(["convert", str(root), str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(good)
    for source, line in zip(good, lines):
        target = tmp_path / "out" / source.relative_to(root).with_suffix(".npz")
        assert line.endswith(f"(nmnist) -> {target}")
        (reader, events), (original_reader, original) = read_all(target), read_all(source)
        assert (reader.width, reader.height) == (original_reader.width, original_reader.height)
        assert (events == original).all()
    assert main(["info", "--json", str(tmp_path / "out")]) == 0
    described = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["format"], d["events"]) for d in described] == \
        [("numpy", len(read_all(source)[1])) for source in good]


@pytest.mark.parametrize("command", ["info", "convert"])
def test_options_and_schedulers_that_cannot_be_used_are_one_line(folder, tmp_path, capsys,
                                                                 command):
    root, _, good = folder
    out = [str(tmp_path / "out")] if command == "convert" else []
    assert main([command, str(root), *out, "-o", "bogus=1", "--scheduler", "local:2"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"evpipe {command}: {good[0]}: bad reader option: ")
    assert len(error.strip().splitlines()) == 1
    assert main([command, str(root), *out, "--scheduler", "bogus"]) == 2
    assert capsys.readouterr().err.strip() == \
        f"evpipe {command}: --scheduler bogus: expected none, local:N (N worker processes on " \
        f"this machine) or a scheduler address like tcp://host:8786"
    assert not (tmp_path / "out").exists()
