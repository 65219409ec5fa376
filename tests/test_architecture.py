"""The layout of docs/architecture.md holds: import-linter contracts (pyproject.toml) and a repository
that speaks for itself (no tracked file narrates its history or cites documents it does not hold)."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

from tests.conftest import ROOT

LINT_IMPORTS = pathlib.Path(sys.executable).parent / "lint-imports"

# Words that tell the story of how the code came to be, or point outside the repository.
HISTORY = re.compile(r"\bissues?\s?#?\d|\bsession\s\d|\bthis\s+session\b|before\s+this\s+(round|change)|"
                     r"\bprevious\s+session\b|DESIGN\.md|\.\./shared/", re.IGNORECASE)


def test_import_contracts_hold():
    done = subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def test_contracts_catch_an_upward_import(tmp_path):
    """The layers contract is not vacuous: a copy of the tree where a sensors module imports the
    runtime breaks it, and the report names that import."""
    for package in ("pipeline", "sensors", "kernels"):
        shutil.copytree(ROOT / package, tmp_path / package)
    info = tmp_path / "sensors" / "info.py"
    info.write_text(info.read_text() + "\nimport pipeline.runtime.config  # noqa: E402\n")
    done = subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode != 0
    assert "sensors.info -> pipeline.runtime.config" in done.stdout


def test_no_tracked_file_narrates_history():
    files = subprocess.run(["git", "ls-files", "--", "*.py", "*.md", "*.toml", "Makefile"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    this = pathlib.Path(__file__).relative_to(ROOT).as_posix()
    hits = []
    for name in files:
        if name in (this, "tests/conftest.py"):
            continue
        for number, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1):
            if HISTORY.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)
