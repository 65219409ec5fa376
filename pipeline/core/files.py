"""Output files: every writer makes the folder of its output path first, here and nowhere else."""

from __future__ import annotations

import os


def make_parent(path) -> str:
    """Create the folder that will hold ``path`` (if any) and return ``path`` as a string."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    return path


def file_problem(exc: OSError) -> str:
    """What an OSError says, with the file it names: "PATH: Permission denied"."""
    return f"{exc.filename}: {exc.strerror}" if exc.filename else (exc.strerror or str(exc))


def open_for_writing(path, mode: str = "w"):
    """``open(path, mode)`` after creating the folder that holds ``path``."""
    return open(make_parent(path), mode)
