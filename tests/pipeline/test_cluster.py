"""Training and evaluation mapped over a real Dask LocalCluster (worker processes): the same JSON
and the same model as in one process, also when a worker is killed mid-run; damaged files are
reported once; bad ``--scheduler`` values are refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial

import numpy as np
import pytest

from pipeline.learn.cluster import Runner, connect, map_files
from pipeline.learn.evaluate import evaluate
from pipeline.learn.features import select
from pipeline.learn.train import TrainParams, train
from sensors.info import info
from sensors.readers import FormatError
from sensors.replay import dataset_files
from tests.conftest import NMNIST_TRAIN, ROOT
from tests.pipeline.helpers import free_port
from tests.pipeline.test_train_eval import BUNDLED, SHIPPED, evpipe

SKIPPED = "skipping unreadable recording"


@pytest.fixture(scope="module")
def local2():
    """A runner on a LocalCluster of two worker processes, shared by the tests of this module."""
    with connect("local:2") as runner:
        yield runner


@pytest.fixture(scope="module")
def single_json(tmp_path_factory) -> bytes:
    """The JSON of `evpipe eval` on the bundled samples in one process (the default scheduler)."""
    out = tmp_path_factory.mktemp("single") / "none.json"
    done = evpipe("eval", "--data", BUNDLED, "--json", out)
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """The bundled classes 0, 1 and 2, with a garbage file among the good ones of class 1 and a
    truncated copy of a sample among those of class 2. Returns (root, bad paths)."""
    root = tmp_path_factory.mktemp("damaged")
    for digit in "012":
        shutil.copytree(BUNDLED / digit, root / digit)
    garbage, cut = root / "1" / "00005.bin", root / "2" / "00009.bin"
    garbage.write_bytes(b"\x00garbage")
    cut.write_bytes((BUNDLED / "2" / "00006.bin").read_bytes()[:1003])
    names = [f.path for f in dataset_files(root)]
    assert 0 < names.index(str(garbage)) < names.index(str(cut)) < len(names) - 1
    return root, [garbage, cut]


def test_eval_on_a_local_cluster_writes_the_single_process_json_and_reports_damage_once(
        single_json, damaged, tmp_path):
    root, bad = damaged
    outputs = {}
    runs = (("bundled", BUNDLED, "local:2"), ("damaged", root, "none"), ("damaged", root, "local:2"))
    for name, data, scheduler in runs:
        out = tmp_path / f"{name}-{scheduler.replace(':', '')}.json"
        done = evpipe("eval", "--data", data, "--json", out, "--scheduler", scheduler)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        outputs[name, scheduler] = out.read_bytes(), done.stderr
    assert json.loads(single_json)["n_samples"] == 20
    assert outputs["bundled", "local:2"][0] == single_json  # byte for byte
    assert SKIPPED not in outputs["bundled", "local:2"][1]
    assert json.loads(outputs["damaged", "none"][0])["n_samples"] == 6
    assert outputs["damaged", "local:2"][0] == outputs["damaged", "none"][0]
    for scheduler in ("none", "local:2"):
        stderr = outputs["damaged", scheduler][1]
        assert stderr.count(SKIPPED) == 2
        for path in bad:
            assert stderr.count(str(path)) == 1, (scheduler, stderr)


@pytest.fixture
def scheduler_address(tmp_path):
    """A `dask scheduler` on a free loopback port with no worker yet, stopped after the test;
    ``start_worker()`` adds a `dask worker` process whose working folder is not this one."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = os.path.join(os.path.dirname(sys.executable), "dask")  # installed with distributed
    started = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                 "--no-dashboard"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)]
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()

    def start_worker():
        started.append(subprocess.Popen(
            [dask, "worker", address, "--nthreads", "1", "--no-dashboard"], cwd=elsewhere,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    yield address, start_worker
    for process in reversed(started):
        process.terminate()
        process.wait(30)


def test_a_running_scheduler_is_used_once_it_has_a_worker(scheduler_address, single_json,
                                                          tmp_path):
    """An address: refused in one line while no worker has joined; with one `dask worker` (in
    another working folder: the relative --data is made absolute), the single-process JSON."""
    address, start_worker = scheduler_address
    data = os.path.relpath(BUNDLED, ROOT)
    lonely = evpipe("eval", "--data", data, "--scheduler", address, "--scheduler-timeout", "3")
    assert lonely.returncode == 2 and "Traceback" not in lonely.stderr
    assert f"--scheduler {address}: no worker joined within 3 s" in lonely.stderr
    start_worker()
    out = tmp_path / "address.json"
    done = evpipe("eval", "--data", data, "--json", out, "--scheduler", address,
                  "--scheduler-timeout", "30")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == single_json


def _executed(dask_worker) -> int:
    return dask_worker.state.executed_count


def test_a_worker_killed_mid_run_changes_nothing(local2, recordings):
    """One of the two worker processes gets SIGKILL once 4 of the 15 batches of 100 files are
    done (7 files a batch: 8 batches per worker thread): its files run again elsewhere and the
    metrics are those of one process."""
    files = select(NMNIST_TRAIN, 10, 3, test=True)
    expected = evaluate(SHIPPED, files, desc="").metrics
    client = local2.client
    before = client.run(os.getpid)
    result, failure = {}, []

    def run():
        try:
            result["metrics"] = evaluate(SHIPPED, files, desc="", runner=local2).metrics
        except Exception as exc:  # reported by the assertion below
            failure.append(exc)

    thread = threading.Thread(target=run)
    start = sum(client.run(_executed).values())
    thread.start()
    deadline = time.monotonic() + 60
    done = start
    while done < start + 4 and time.monotonic() < deadline:
        time.sleep(0.02)
        done = sum(client.run(_executed).values())
    victim = next(iter(before.values()))
    os.kill(victim, signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive() and not failure, failure
    assert start + 4 <= done < start + 12  # the kill came mid-run
    assert json.loads(json.dumps(result["metrics"])) == json.loads(json.dumps(expected))
    client.wait_for_workers(2, timeout=30)
    after = client.run(os.getpid)
    assert victim not in after.values() and len(after) == 2  # the nanny started a new worker


def test_training_on_a_local_cluster_writes_the_same_model(local2, tmp_path):
    params = TrainParams(epochs=5, prototype_samples=10)
    files = dataset_files(BUNDLED)
    paths = tmp_path / "one.npz", tmp_path / "two.npz"
    trainings = [train(files, path, params=params, runner=runner)
                 for path, runner in zip(paths, (None, local2))]
    for training in trainings:
        del training["seconds"]
    assert trainings[0] == trainings[1]
    with np.load(paths[0]) as one, np.load(paths[1]) as two:
        assert sorted(one.files) == sorted(two.files)
        for key in set(one.files) - {"training"}:  # the training metadata: compared above
            assert np.array_equal(one[key], two[key]), key


def test_map_files_keeps_the_order_and_reports_each_bad_file_once(local2, damaged, caplog):
    root, bad = damaged
    paths = [f.path for f in dataset_files(root)]
    describe = partial(info, format="auto")
    mapped = [runner.map(describe, paths, errors=(FormatError,)) for runner in (Runner(), local2)]
    assert mapped[0] == mapped[1]
    assert [r is None for r in mapped[1].results] == [p in map(str, bad) for p in paths]
    assert mapped[1].results[0] == info(paths[0])
    assert len(mapped[1].failed) == len(bad)
    assert all(m.startswith(f"{p} at byte 0: ") for m, p in zip(mapped[1].failed, bad))
    reported = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert reported == mapped[0].failed + mapped[1].failed
    with pytest.raises(FormatError):  # an error not listed in ``errors`` stops the job
        map_files(describe, paths)


@pytest.mark.parametrize("scheduler, message", [
    ("local:0", "--scheduler local:0: the number of local workers must be a whole number >= 1"),
    ("bogus", "--scheduler bogus: expected none, local:N"),
    ("tcp://127.0.0.1:{port}", "--scheduler tcp://127.0.0.1:{port}: no Dask scheduler answered "
                               "within 1 s"),
])
@pytest.mark.parametrize("command", ["eval", "train"])
def test_a_bad_scheduler_is_refused_in_one_line(command, scheduler, message, tmp_path):
    port = free_port()
    scheduler, message = scheduler.format(port=port), message.format(port=port)
    out = tmp_path / "model.npz"
    done = evpipe(command, "--data", BUNDLED, "--scheduler", scheduler, "--scheduler-timeout", "1",
                  *(["--out", out] if command == "train" else []))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert message in done.stderr
    assert not out.exists()


def test_the_single_process_runner_needs_no_dask():
    """``none`` maps in this process: no cluster, no client."""
    with connect("none") as runner:
        assert runner.client is None
        assert runner.map(len, ["ab", "c"]).results == [2, 1]
