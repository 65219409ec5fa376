"""Heartbeats (docs/architecture.md, "Recovery"): a stage process that stops answering (SIGSTOP)
is reported by its neighbours within the link's peer_timeout_s, reported back when it answers
again (SIGCONT), and the lossless links lose nothing meanwhile: the run ends with exactly the
pinned decisions."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time

from tests.conftest import ROOT
from tests.golden.test_default_decisions import GOLDEN, KEPT
from tests.pipeline.test_cli import EVPIPE
from tests.pipeline.test_recovery import decisions, pid_named, replaying_config


def test_a_silent_stage_is_reported_and_its_links_lose_nothing(tmp_path):
    config = replaying_config(tmp_path)
    text = open(config).read().replace("[[link]]\n", "[[link]]\nheartbeat_s = 0.2\npeer_timeout_s = 1.0\n")
    open(config, "w").write(text)
    proc = subprocess.Popen(EVPIPE + ["run", config], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(decisions(tmp_path)) < 4:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        pid = pid_named("evpipe:hots", proc.pid)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(3.0)
        os.kill(pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    # the snn stage waits on hots: it reports the silence, then hots's return
    silent = re.search(r"\[snn\] sending end of \S+hots--snn\.sock: nothing heard for ([\d.]+) s", stderr)
    assert silent, stderr[-3000:]
    assert 1.0 <= float(silent[1]) < 2.5
    assert re.search(r"\[snn\] sending end of \S+hots--snn\.sock is heard again", stderr)
    got = [{key: record[key] for key in KEPT} for record in decisions(tmp_path)]
    assert got == json.loads(GOLDEN.read_text())
