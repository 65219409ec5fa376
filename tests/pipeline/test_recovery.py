"""Surviving a killed process (docs/architecture.md, "Recovery"): the default graph, one process per
node, replaying the bundled samples at twice real time; a stage or sink process is killed with
SIGKILL mid-run. The supervisor restarts it, the exactly-once links resend what it had not
finished, and the run ends by itself with exactly the decisions of an undisturbed run
(tests/golden/default_decisions.json), each once. With no restarts allowed, the graph gives up and
ends with exit code 1, keeping every decision it had written."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import time

import pytest

from pipeline.runtime.config import load
from pipeline.runtime.graph import run
from tests.conftest import ROOT
from tests.golden.test_default_decisions import GOLDEN, KEPT
from tests.pipeline.test_cli import EVPIPE
from tests.sinks.helpers import demo_config, nmnist_subset


def replaying_config(folder: pathlib.Path, placement: str = "per_node", **graph) -> str:
    """config.toml, one process per node (or as ``placement`` says), the replay at twice real
    time (about 3 s of data)."""
    path = pathlib.Path(demo_config(folder, name=f"recovery-{folder.name}", placement=placement,
                                    **graph))
    text, found = re.subn(r"(?m)^speed = 0\.0", "speed = 2.0", path.read_text())
    assert found == 1
    path.write_text(text)
    return str(path)


def pid_named(title: str, parent: int) -> int | None:
    """The child of ``parent`` whose process title is ``title`` (setproctitle)."""
    children = pathlib.Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    for pid in children:
        with contextlib.suppress(OSError):
            name = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            if name == title:
                return int(pid)
    return None


def decisions(folder: pathlib.Path) -> list[dict]:
    path = folder / "demo.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def kill_after(proc: subprocess.Popen, folder: pathlib.Path, node: str, written: int) -> int:
    """SIGKILL the process of ``node`` once ``written`` decisions are in the JSON lines; the
    number of decisions written at that moment."""
    deadline = time.monotonic() + 120
    while len(decisions(folder)) < written:
        assert proc.poll() is None and time.monotonic() < deadline, "the graph ended too early"
        time.sleep(0.02)
    pid = pid_named(f"evpipe:{node}", proc.pid)
    assert pid is not None, f"no process evpipe:{node}"
    os.kill(pid, signal.SIGKILL)
    return len(decisions(folder))


def run_and_kill(folder: pathlib.Path, node: str, written: int, placement: str = "per_node",
                 **graph):
    proc = subprocess.Popen(EVPIPE + ["run", replaying_config(folder, placement, **graph)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        before = kill_after(proc, folder, node, written)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, before, stdout, stderr


@pytest.mark.parametrize("node,written", [("denoise", 2), ("hots", 6), ("snn", 10),
                                          ("decoder", 14), ("jsonl", 4)])
def test_a_killed_process_is_restarted_and_no_decision_is_lost_or_doubled(tmp_path, node, written):
    code, _, stdout, stderr = run_and_kill(tmp_path, node, written)
    assert code == 0, stderr[-3000:]
    assert f"worker {node} ({node}) killed by SIGKILL; restarting it" in stderr
    got = [{key: record[key] for key in KEPT} for record in decisions(tmp_path)]
    assert got == json.loads(GOLDEN.read_text())  # every decision, once, in order
    row = next(line for line in stdout.splitlines() if line.startswith(f"{node} "))
    assert "restarted 1x" in row


def test_a_killed_replay_worker_reads_again_from_the_segment_it_was_in(tmp_path):
    """The default placement: the worker of replay and denoise (the source and a stateful stage
    fused) is killed; restarted, the replay passes quickly over what it had sent and the
    decisions are again exactly the pinned ones."""
    code, _, _, stderr = run_and_kill(tmp_path, "replay+denoise", 8, placement="auto")
    assert code == 0, stderr[-3000:]
    assert "first packet handled again after the restart" in stderr
    got = [{key: record[key] for key in KEPT} for record in decisions(tmp_path)]
    assert got == json.loads(GOLDEN.read_text())


def test_a_graph_that_may_not_restart_ends_by_itself_keeping_what_it_wrote(tmp_path):
    """restarts = 0: the supervisor gives up at once; the other processes end their nodes by
    themselves (the ones beside the dead one once it has been silent for the peer timeout), the
    sink closes its file with every decision written before, and the run exits 1."""
    started = time.monotonic()
    code, before, _, stderr = run_and_kill(tmp_path, "hots", 5, restarts=0)
    assert code == 1
    assert "giving up; ending the graph" in stderr
    assert "did not drain" not in stderr and "Assertion failed" not in stderr, stderr[-3000:]
    assert re.findall(r"worker '(\w+)' ended: killed", stderr) == ["hots"], stderr[-3000:]
    kept = decisions(tmp_path)
    golden = json.loads(GOLDEN.read_text())
    assert before <= len(kept) < len(golden)
    assert [{key: record[key] for key in KEPT} for record in kept] == golden[:len(kept)]
    assert time.monotonic() - started < 90


def test_a_stage_run_alone_resumes_when_an_external_supervisor_starts_it_again(tmp_path):
    """Each node as its own `evpipe stage` (as systemd or Kubernetes would run them); the hots
    stage is killed and started again by hand: it resumes from the resume point in its run
    folder, and the decisions are exactly the pinned ones."""
    config = replaying_config(tmp_path)
    run_dir = tmp_path / "run"
    names = ["replay", "denoise", "hots", "snn", "decoder", "console", "jsonl"]

    def stage(name: str) -> subprocess.Popen:
        return subprocess.Popen(EVPIPE + ["stage", name, "-c", config, "--run-dir", str(run_dir)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    procs = {name: stage(name) for name in names}
    try:
        deadline = time.monotonic() + 120
        while len(decisions(tmp_path)) < 6:
            assert time.monotonic() < deadline and procs["jsonl"].poll() is None
            time.sleep(0.02)
        procs["hots"].kill()
        procs["hots"].wait()
        assert (run_dir / "hots.resume").exists()  # what the next start resumes from
        procs["hots"] = stage("hots")
        codes = {name: proc.wait(120) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert codes == dict.fromkeys(names, 0), {n: p.stderr.read()[-2000:] for n, p in procs.items()}
    assert "resuming hots at packet" in procs["hots"].stderr.read()
    got = [{key: record[key] for key in KEPT} for record in decisions(tmp_path)]
    assert got == json.loads(GOLDEN.read_text())
    assert not list(run_dir.glob("*.resume"))  # every stage ended cleanly: the next run is fresh


def test_a_lagging_worker_keeps_acknowledging_so_the_resend_buffer_stays_bounded(tmp_path):
    """The default placement unpaced on 80 training samples (about 20,000 packets): the second
    worker (hots, snn, decoder, sinks) is the slower one, so its input never runs dry. It must
    still save resume points and acknowledge them upstream as it goes: the first worker's resend
    buffer, limited here to 6,000 packets (what the link's queues and a drain between
    acknowledgements hold is about half that), never overflows."""
    data, total = nmnist_subset(tmp_path / "data", per_class=8)
    path = pathlib.Path(demo_config(tmp_path, name=f"lagging-{tmp_path.name}", summary=False))
    text, found = re.subn(r'(?m)^path = "[^"]*nmnist"', f'path = "{data}"', path.read_text())
    assert found == 1
    path.write_text(text.replace("[[link]]\n", "[[link]]\nhwm = 4\nresend_packets = 6000\n"))
    result = run(load(str(path)))
    assert result.ok
    assert result.snapshots["decoder"]["packets_in"] > 18_000
    assert result.snapshots["jsonl"]["packets_in"] == total == 80
    assert result.snapshots["denoise"]["overflow"] == 0
