"""The evpipe program end to end: the demo, graceful SIGINT, failing stages, config errors, replay."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest
import zmq

from pipeline.cli.main import main
from pipeline.runtime.config import load
from pipeline.runtime.links import LOSSLESS, Receiver
from pipeline.runtime.metrics import SNAPSHOT_TOPIC, metrics_address
from tests.conftest import AEDAT4_SAMPLE, ROOT
from tests.pipeline.helpers import chain_config, free_port, write_config
from tests.sinks.helpers import demo_config, failing_config

EVPIPE = [sys.executable, "-m", "pipeline.cli"]


def evpipe(*args, timeout=120, **kwargs):
    return subprocess.run(EVPIPE + list(args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, **kwargs)


def looping_graph(tmp_path, runner: str, out_path) -> str:
    """The AEDAT4 sample looping in real time through a passthrough stage into an npy sink; the
    graph is named after the test, so its metrics address is its own."""
    return str(chain_config(tmp_path / "loop.toml", AEDAT4_SAMPLE, out_path,
                            graph=f'runner = "{runner}"\nname = "loop-{tmp_path.name}"\nmetrics_interval_s = 0.2',
                            replay="speed = 1.0\nloop = true"))


def wait_until_recorded(config: str, events: int) -> None:
    """Wait (at most a minute) until the graph's metrics say its sink has received ``events``."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, SNAPSHOT_TOPIC)
    sock.connect(metrics_address(load(config).graph))
    received, deadline = 0, time.monotonic() + 60
    try:
        while received < events and time.monotonic() < deadline:
            if sock.poll(100, zmq.POLLIN):
                snapshot = json.loads(sock.recv_multipart()[1])
                if snapshot["node"] == "record":
                    received = snapshot["records_in"]
    finally:
        sock.close(linger=0)
        ctx.term()
    assert received >= events, f"the sink received {received} events in a minute"


CONSOLE_LINE = re.compile(r"\[snn\] object (\d+): class (\S+) by (\S+) \(score [\d.]+, margin [\d.]+\) "
                          r"[\d.]+ ms after onset, ([\d,]+) events; e2e [\d.]+ ms, decoder \d+ us  "
                          r"true (\S+): (right|WRONG)$")


def test_demo_prints_the_pinned_decisions_and_a_summary(tmp_path):
    """`make demo` (config.toml, here writing its JSON lines under tmp_path): one console line
    per bundled sample with the decision of tests/golden/default_decisions.json, its truth and
    verdict, then the summary table with every node and the run's placement and timing."""
    done = evpipe("run", demo_config(tmp_path, name=f"demo-{tmp_path.name}", cores=2))
    assert done.returncode == 0, done.stderr
    lines = [CONSOLE_LINE.match(line) for line in done.stdout.splitlines() if line.startswith("[snn] object")]
    assert all(lines), done.stdout
    golden = json.loads((ROOT / "tests" / "golden" / "default_decisions.json").read_text())
    assert [(int(m[1]), m[2], m[3], int(m[4].replace(",", "")), m[5]) for m in lines] == [
        (d["segment"], d["class_name"], d["rule"], d["events"], d["label"]) for d in golden]
    assert [m[6] for m in lines] == ["right" if d["class_name"] == d["label"] else "WRONG" for d in golden]
    closing, *summary = done.stdout.split("\n".join(m[0] for m in lines), 1)[1].strip().splitlines()
    right = sum(d["class_name"] == d["label"] for d in golden)
    assert re.fullmatch(rf"\[snn\] end of stream: 20 decisions, 0 abstentions, {right}/20 right; "
                        r"e2e p50 [\d.]+ ms, p99 [\d.]+ ms", closing), closing
    *table, timing = summary
    assert {line.split()[0] for line in table[2:]} == {
        "replay", "denoise", "hots", "snn", "decoder", "console", "jsonl"}
    assert re.fullmatch(r"2 worker processes \(replay\+denoise \| hots\+snn\+decoder\+console\+jsonl\): "
                        r"ready in [\d.]+ s, streamed for [\d.]+ s", timing), timing


def start_graph(config: str) -> subprocess.Popen:
    """`evpipe run CONFIG` in a session of its own (``interrupt`` can end all its processes)."""
    return subprocess.Popen(EVPIPE + ["run", config], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def interrupt(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGINT to the orchestrator; its output once it has ended. A graph still running a minute
    later fails the test, and every process of its session is killed."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("runner", ["threads", "processes"])
def test_sigint_drains_flushes_and_exits_zero(tmp_path, runner):
    out = tmp_path / "loop.npy"
    config = looping_graph(tmp_path, runner, out)
    proc = start_graph(config)
    try:
        wait_until_recorded(config, 20_000)  # let it stream in real time for a while
    finally:
        stdout, stderr = interrupt(proc)
    assert proc.returncode == 0, stderr
    events = np.load(out)  # the sink flushed at end of stream
    assert len(events) >= 20_000
    assert "record" in stdout and "events/s" in stdout  # end summary printed
    summary = {line.split()[0]: line.split() for line in stdout.splitlines() if line.split()[:1] in
               (["replay"], ["record"])}
    sent = int(summary["replay"][3].replace(",", ""))
    assert sent == len(events)  # nothing accepted was lost


def test_sigint_while_the_worker_processes_start_still_drains(tmp_path):
    """SIGINT the moment the worker processes exist, while they are still loading: the sources
    are told to stop once they can take it, so the graph drains instead of losing a source."""
    out = tmp_path / "loop.npy"
    config = looping_graph(tmp_path, "processes", out)
    expected = len(load(config).placement.workers) + 1  # and the multiprocessing resource tracker
    proc = start_graph(config)
    children = pathlib.Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 60
    while len(children.read_text().split()) < expected and time.monotonic() < deadline:
        time.sleep(0.002)
    started = len(children.read_text().split())
    stdout, stderr = interrupt(proc)  # also when the processes did not all start: no orphans
    assert started >= expected
    assert proc.returncode == 0, stderr
    assert "ended abnormally" not in stderr
    summary = {line.split()[0]: line.split() for line in stdout.splitlines() if line.split()[:1] in
               (["replay"], ["record"])}
    assert int(summary["replay"][3].replace(",", "")) == len(np.load(out))


@pytest.mark.parametrize("runner", ["threads", "processes"])
def test_a_failing_sink_is_reported_in_one_line_and_the_run_exits_nonzero(tmp_path, runner):
    config = failing_config(tmp_path / "fail.toml", runner)
    done = evpipe("run", str(config))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"node 'record' stopped in finish: {tmp_path}/npy_path_is_a_folder: Is a directory" in done.stderr
    assert "ERROR" in done.stdout  # the summary row names the failure


def test_config_error_names_the_key_and_exits_2(tmp_path):
    config = write_config(tmp_path / "bad.toml", '[source.replay]\ntype = "replay"\npath = "x"\nsped = 2\n')
    done = evpipe("run", str(config))
    assert done.returncode == 2
    assert "bad.toml:4: source.replay.sped: unknown key" in done.stderr


def test_stage_refuses_a_malformed_metrics_address_and_a_run_folder_under_a_file(tmp_path, caplog):
    config = chain_config(tmp_path / "graph.toml", AEDAT4_SAMPLE, tmp_path / "out.npy")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for flags, message in ((["--metrics", "localhost:5"], "--metrics: expected tcp://HOST:PORT"),
                           (["--run-dir", str(blocker / "run")], f"run folder {blocker / 'run'}: "
                                                                 f"cannot make it (Not a directory)")):
        assert main(["stage", "record", "-c", str(config), *flags]) == 2
        assert message in caplog.text


def test_replay_checks_a_non_finite_speed_as_the_config_does(caplog):
    assert main(["replay", str(AEDAT4_SAMPLE), "--speed", "nan"]) == 2
    assert "source.replay.speed: expected a number >= 0 and <= 100, got nan" in caplog.text


def test_replay_publishes_to_a_remote_receiver():
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(EVPIPE + ["replay", str(AEDAT4_SAMPLE), "--publish", address, "--mode", "lossless"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    receiver = Receiver(ctx, address, LOSSLESS)
    total = 0
    while True:
        packet = receiver.receive(timeout_ms=30_000)
        assert packet is not None
        if packet.is_eos:
            break
        total += len(packet.records)
        assert packet.header.width == 320 and packet.header.height == 240
    assert proc.wait(60) == 0
    assert total == 111_954 and receiver.stats.gaps == 0
    receiver.close()
    ctx.term()


@pytest.mark.parametrize("command", ["run", "stage", "replay", "info", "convert", "devices", "top",
                                     "train", "eval", "view", "plot", "keys", "export", "import",
                                     "nodes"])
def test_every_subcommand_has_help(command, capsys):
    """In this process: the parser is what `evpipe` builds (the version test runs the program)."""
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0 and "usage: evpipe " + command in capsys.readouterr().out


def test_version_is_the_installed_package_version():
    done = evpipe("--version")
    assert done.returncode == 0
    assert done.stdout == f"evpipe {importlib.metadata.version('evpipe')}\n"
    assert done.stdout.split()[1] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.parametrize("command, head_lines", [
    (["info", str(AEDAT4_SAMPLE)], 0),  # head reads nothing: every write of info meets a closed pipe
    (["run", "DEMO"], 1),  # head keeps the first decision; the node's later lines and the summary meet a closed pipe
])
def test_a_closed_stdout_ends_the_command_quietly(tmp_path, command, head_lines):
    command = [demo_config(tmp_path, name=f"pipe-{tmp_path.name}") if c == "DEMO" else c for c in command]
    producer = subprocess.Popen(EVPIPE + command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-n", str(head_lines)], stdin=producer.stdout, stdout=subprocess.PIPE)
    producer.stdout.close()  # head holds the only reading end now
    shown, _ = head.communicate(timeout=120)
    stderr = producer.stderr.read().decode()
    assert producer.wait(120) == 141, stderr  # 128 + SIGPIPE, as if the signal had ended it
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert len(shown.decode().splitlines()) == head_lines
    if command[0] == "run":
        assert shown.decode().startswith("[snn] object 0: class 0 by count")
        assert "node 'console' stopped in process(" in stderr and "standard output was closed" in stderr


def test_graph_split_over_separate_stage_commands(tmp_path):
    """Each node started on its own with `evpipe stage`, linked over tcp, as on separate hosts;
    a second process of a running node, with the same run folder, is refused."""
    out = tmp_path / "split.npy"
    first, second = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    config = chain_config(tmp_path / "split.toml", AEDAT4_SAMPLE, out, addresses=(first, second))

    def stage(name):
        return subprocess.Popen(EVPIPE + ["stage", name, "-c", str(config), "--run-dir", str(tmp_path)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [stage("record")]
    wait_until_handled(procs[0].pid, signal.SIGTERM)  # it holds its node's lock by then
    again = stage("record")
    _, stderr = again.communicate(timeout=60)
    assert again.returncode == 2 and "Traceback" not in stderr, stderr
    assert f"node 'record' already runs with run folder {tmp_path}" in stderr, stderr
    procs += [stage("pass"), stage("replay")]
    for proc in procs:
        assert proc.wait(120) == 0, proc.stderr.read()
    events = np.load(out)
    assert len(events) == 111_954 and np.all(np.diff(events["t"]) >= 0)


def test_worker_processes_are_named_after_their_nodes(tmp_path):
    """`ps` tells the worker processes apart: each is named evpipe:<its nodes joined by +>."""
    config = looping_graph(tmp_path, "processes", tmp_path / "loop.npy")
    expected = {f"evpipe:{'+'.join(plan.nodes)}" for plan in load(config).placement.workers}
    proc = start_graph(config)
    children = pathlib.Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    names: set[str] = set()
    deadline = time.monotonic() + 60
    while not expected <= names and time.monotonic() < deadline:
        time.sleep(0.05)
        for pid in children.read_text().split():
            with contextlib.suppress(OSError):
                names.add(pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().strip())
    interrupt(proc)
    assert expected <= names, names


def wait_until_handled(pid: int, sig: signal.Signals, timeout_s: float = 60) -> None:
    """Wait until process ``pid`` has a handler for ``sig`` (the SigCgt mask of /proc/PID/status):
    it has started far enough to take the signal as a request rather than die of it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
        caught = int(re.search(r"(?m)^SigCgt:\s*([0-9a-f]+)", status)[1], 16)
        if caught >> (sig - 1) & 1:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never handled {sig.name}")


def test_sigterm_ends_a_lossless_publisher_nobody_receives(tmp_path):
    """`evpipe replay F --publish ADDRESS --mode lossless` with no receiver: its sends block;
    SIGTERM still ends it, once the receiving end has been unheard for the link's peer timeout,
    saying what was not delivered."""
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(EVPIPE + ["replay", str(AEDAT4_SAMPLE), "--publish", address,
                                      "--mode", "lossless"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_handled(proc.pid, signal.SIGTERM)
    time.sleep(1)  # blocked on the link nobody reads
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert re.search(r"packets not delivered: its receiving end tcp://\S+ unheard for [\d.]+ s", stderr), stderr
    assert "Traceback" not in stderr


def test_a_live_publisher_nobody_subscribes_to_says_so_and_counts_every_packet_dropped():
    address = f"tcp://127.0.0.1:{free_port()}"
    done = subprocess.run(EVPIPE + ["replay", str(AEDAT4_SAMPLE), "--publish", address,
                                    "--mode", "live"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"waiting up to 10 s more for a subscriber on {address}" in done.stderr
    assert "every packet nobody receives counted as dropped" in done.stderr
    row = next(line.split() for line in done.stdout.splitlines() if line.startswith("replay "))
    packets, dropped = int(row[4].replace(",", "")), int(row[5].replace(",", ""))
    assert packets > 100 and dropped == packets
