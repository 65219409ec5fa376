"""What surviving a killed process costs (docs/architecture.md, "Recovery").

1. **Exactly-once links vs plain lossless links.** config.toml's graph with one process per node
   (six socket links, the case where links cost most), unpaced, on ``PER_CLASS`` N-MNIST training
   samples per class: every link ``exactly_once = true`` (the default: resume points
   acknowledged, resend buffer, duplicates dropped, resume files saved) against the same graph
   with ``exactly_once = false`` (the lossless link without acknowledgements), run alternately in
   the same run, wall seconds streamed (``evpipe run``'s summary), best of ``REPEATS``. Ratio:
   plain time / exactly-once time, target 0.8.
2. **Restart time.** The same graph replaying ``RESTART_PER_CLASS`` samples per class at real time
   (``speed = 1``, about 9 s); once it has streamed ``KILL_AFTER_S``, a stage process is killed
   with SIGKILL. Measured: wall seconds from the kill
   to the restarted process's first packet handled again (its log line). The reference, measured
   in the same run, is how long the same graph's processes took from being spawned to ready (the
   summary's "ready in": start, imports, warm-up, links), which a restart must also pay. Target:
   under 2 s.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

from bench.bench_graph import ROOT, STREAMED, default_config, graph_seconds, samples
from bench.common import record

PER_CLASS = 30
RESTART_PER_CLASS = 3
REPEATS = 3
KILL_AFTER_S = 3.0
KILLED = ("hots", "snn")
TARGET_RESTART_S = 2.0
AGAIN = re.compile(r"^(\S+ \S+) INFO \[(\w+)\] first packet handled again", re.MULTILINE)


def pid_named(title: str, parent: int) -> int | None:
    for pid in pathlib.Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            if pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() == title:
                return int(pid)
        except OSError:
            continue
    return None


def restart_seconds(config: pathlib.Path, node: str) -> tuple[float, float]:
    """(s from SIGKILL of ``node`` to its first packet handled again, the run's "ready in" s)."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = None
        while pid is None:  # every process exists once the node's does; then let it stream
            time.sleep(0.05)
            pid = pid_named(f"evpipe:{node}", proc.pid)
        jsonl = next(config.parent.glob("*.jsonl"), None)
        while jsonl is None or not jsonl.exists() or not jsonl.stat().st_size:
            time.sleep(0.05)
            jsonl = next(config.parent.glob("*.jsonl"), None)
        time.sleep(KILL_AFTER_S)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=900)
    finally:
        proc.kill()
    again = next(m for m in AGAIN.finditer(stderr) if m[2] == node)
    at = datetime.datetime.strptime(again[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return at - killed_at, float(STREAMED.search(stdout)[1])


def run(options=()) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        data = samples(folder / "data", slice(0, PER_CLASS))
        exact, plain = (default_config(folder, data, "per_node", link=f"exactly_once = {flag}")
                        for flag in ("true", "false"))
        times = {exact: [], plain: []}
        for _ in range(REPEATS):
            for config in (exact, plain):
                times[config].append(graph_seconds(config))
        ours, peer = min(times[exact]), min(times[plain])
        out.append(record(f"exactly-once lossless links vs plain lossless links (default graph, "
                          f"one process per node, {10 * PER_CLASS} N-MNIST samples)", ours, peer,
                          "s", 0.8, ratio=peer / ours))
        few = samples(folder / "few", slice(0, RESTART_PER_CLASS))
        for node in KILLED:
            run_dir = folder / f"kill-{node}"
            run_dir.mkdir()
            paced = default_config(run_dir, few, "per_node")
            paced.write_text(paced.read_text().replace("speed = 0.0", "speed = 1.0"))
            seconds, ready = restart_seconds(paced, node)
            out.append(dict(name=f"restart of a killed {node} process: SIGKILL to its first "
                                 f"packet handled again (cold start of the graph: {ready:.2f} s)",
                            ours=seconds, peer=None, unit="s", ratio=None,
                            target=TARGET_RESTART_S, lower_is_better=True, cold_start_s=ready))
    return out


if __name__ == "__main__":
    for row in run():
        print(row)
