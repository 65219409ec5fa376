"""Evaluation of a dataset on a Dask LocalCluster of two worker processes vs one process.

Files: the 1000 samples of the N-MNIST training folder under ``RECORDINGS`` (bench/common.py);
model: the shipped recordings/model.npz. Both sides in this one run, on the same files, wall time
(``time.perf_counter``):

- the command a user types, ``evpipe eval --data DIR --json OUT`` with ``--scheduler none`` and
  ``--scheduler local:2``, each run twice, alternating, the faster run of each kept; each run
  pays its own start-up (this process's numba kernels, or the cluster and its workers' kernels)
  and, for local:2, the cluster's shutdown;
- warm, in this process: ``evaluate`` with no runner and with a runner on a started LocalCluster,
  each after a warm-up evaluation of 40 files (numba kernels loaded in this process and in both
  workers), which isolates the mapping from the cluster's start-up.

What the machine gives two processes at that moment is measured too: two plain processes (no
Dask), each evaluating every other file, started together, against one process (the ceiling of
any 2-worker speed-up; on a machine shared with other work it falls well below 2).

The JSON outputs of the two commands must be equal byte for byte (a benchmark of a wrong answer
is no benchmark). The overhead per file of the Dask path is measured two ways: a no-op mapped
over the 1000 paths on the warm cluster (scheduling and gathering alone, wall ms per file), and
the CPU time the warm cluster spent beyond one process's: (2 x wall(local:2) - wall(one)) / files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from bench.common import RECORDINGS
from pipeline.learn.cluster import connect
from pipeline.learn.evaluate import evaluate
from pipeline.learn.features import labelled_files

DATA = RECORDINGS / "nmnist" / "Train"
MODEL = os.path.join(os.path.dirname(__file__), "..", "recordings", "model.npz")
TARGET = 1.6  # speed-up of local:2 over one process on a 2-core machine
WORKERS = 2


def _command(scheduler: str, out: str) -> float:
    """Wall seconds of one ``evpipe eval`` over DATA with ``--scheduler``."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", "eval", "--model", MODEL, "--data",
                    str(DATA), "--json", out, "--scheduler", scheduler], check=True,
                   capture_output=True)
    return time.perf_counter() - start


def commands() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        outs = {s: os.path.join(tmp, f"{s.replace(':', '')}.json") for s in ("none", "local:2")}
        runs: dict[str, list[float]] = {s: [] for s in outs}
        for _ in range(2):
            for scheduler in outs:
                runs[scheduler].append(_command(scheduler, outs[scheduler]))
        times = {s: min(r) for s, r in runs.items()}
        same = open(outs["none"], "rb").read() == open(outs["local:2"], "rb").read()
    if not same:
        raise AssertionError("evpipe eval --scheduler local:2 wrote another JSON than one process")
    return times


HALF = """
import sys, time
from pipeline.learn.evaluate import evaluate
from pipeline.learn.features import labelled_files
files = labelled_files(sys.argv[1])[int(sys.argv[2])::2]
evaluate(sys.argv[3], files[:20], desc="")
start = time.perf_counter()
evaluate(sys.argv[3], files, desc="")
print(time.perf_counter() - start)
"""


def two_processes() -> float:
    """Wall seconds until both of two plain processes, each evaluating every other file of DATA
    (after a warm-up of 20), are done: the longer of their two timed evaluations."""
    runs = [subprocess.Popen([sys.executable, "-c", HALF, str(DATA), str(part), MODEL],
                             stdout=subprocess.PIPE, text=True) for part in (0, 1)]
    return max(float(run.communicate()[0]) for run in runs)


def warm(files) -> dict:
    """Wall seconds of evaluate(files) in this process and on a warm 2-worker LocalCluster, of a
    no-op map over the paths, and of the cluster's start-up."""
    evaluate(MODEL, files[:40], desc="")
    start = time.perf_counter()
    one = evaluate(MODEL, files, desc="").metrics
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    with connect(f"local:{WORKERS}") as runner:
        startup_s = time.perf_counter() - start
        evaluate(MODEL, files[:40], desc="", runner=runner)
        start = time.perf_counter()
        two = evaluate(MODEL, files, desc="", runner=runner).metrics
        cluster_s = time.perf_counter() - start
        start = time.perf_counter()
        runner.map(os.fspath, [f.path for f in files])  # a no-op: the path itself
        noop_s = time.perf_counter() - start
    if one != two:
        raise AssertionError("evaluate on the cluster gave other metrics than in one process")
    return {"single_s": single_s, "cluster_s": cluster_s, "noop_s": noop_s, "startup_s": startup_s,
            "processes_s": two_processes()}


def run() -> list[dict]:
    files = labelled_files(DATA)
    n = len(files)
    load = os.getloadavg()[0]  # 1-minute load average before each part: others' work shows
    cli = commands()
    load_warm = os.getloadavg()[0]
    w = warm(files)
    return [
        {"name": f"evpipe eval, {n} N-MNIST files, wall s: local:{WORKERS} vs one process",
         "ours": cli["local:2"], "peer": cli["none"], "unit": "s",
         "ratio": cli["none"] / cli["local:2"], "target": TARGET, "load_before": load},
        {"name": f"evaluate {n} files on a warm cluster, wall s: local:{WORKERS} vs one process",
         "ours": w["cluster_s"], "peer": w["single_s"], "unit": "s",
         "ratio": w["single_s"] / w["cluster_s"], "target": TARGET,
         "cluster_startup_s": w["startup_s"], "load_before": load_warm},
        {"name": f"evaluate {n} files, wall s: two plain processes (halves) vs one process",
         "ours": w["processes_s"], "peer": w["single_s"], "unit": "s",
         "ratio": w["single_s"] / w["processes_s"], "target": None},
        {"name": f"evaluate {n} files, wall s: warm local:{WORKERS} vs two plain processes",
         "ours": w["cluster_s"], "peer": w["processes_s"], "unit": "s",
         "ratio": w["processes_s"] / w["cluster_s"], "target": None},
        {"name": f"no-op mapped over {n} paths on the warm cluster, wall ms per file",
         "ours": 1e3 * w["noop_s"] / n, "peer": None, "unit": "ms/file", "ratio": None,
         "target": None},
        {"name": f"CPU beyond one process's: ({WORKERS} x wall(local:{WORKERS}) - wall(one)) / n",
         "ours": 1e3 * (WORKERS * w["cluster_s"] - w["single_s"]) / n, "peer": None,
         "unit": "ms/file", "ratio": None, "target": None,
         "single_ms_per_file": 1e3 * w["single_s"] / n},
    ]
