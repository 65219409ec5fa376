"""Resume points of a worker, in a file that outlives its process (docs/architecture.md,
"Recovery").

A worker that is restarted after its process died starts every node afresh and resumes each
input at a known point: the stateful stages (denoise, hots, snn, decoder) forget everything at a
segment start, so the start of a segment, replayed from the upstream's resend buffer
(``pipeline.runtime.links``) or read again by a replay source, rebuilds exactly the state they
had. A **resume point** of an input is the sequence number of such a packet (on a stream
without segments: of the first packet after the worker last waited, where the state that
follows is rebuilt only approximately), together with the next sequence number of every node of
the worker at that moment, so the packets made again carry the numbers they had the first time
and the receivers downstream drop them as duplicates. A point becomes the worker's resume point
once every downstream worker has acknowledged that it will never need a packet before the ones
made from it; the worker then acknowledges it upstream in turn (upstream backup, Hwang et al.,
ICDE 2005).

Sinks write where nothing can be taken back (files, terminals, sockets), so each sink also keeps
a **mark**: the sequence number of the last packet it handled. After a restart it skips what it
has already handled.

The file, ``<folder>/<worker>.resume``, is an int64 array mapped into memory: ``[0]`` says which
of two copies is current (-1: none yet), then the two copies (a resume point of each input, then
the next sequence number of each node), then the marks (-1: none). A new point is written to the
other copy and then made current by one aligned store, so a process killed at any instant leaves
a valid file (stores into a shared file mapping live in the page cache, not in the process).
"""

from __future__ import annotations

import logging
import os

import numpy as np

log = logging.getLogger(__name__)


def resume_path(folder: str, nodes) -> str:
    """The resume file of the worker running ``nodes`` (names, in order) in ``folder``."""
    return os.path.join(folder, "+".join(nodes) + ".resume")


class ResumeFile:
    """The resume points of a worker with ``n_inputs`` inputs (socket inputs, or its source) and
    ``n_nodes`` nodes. ``point``: the last saved point, or None; ``marks``: the sinks' marks;
    ``restarted``: the file was there already (an earlier process of this worker died)."""

    def __init__(self, path: str, n_inputs: int, n_nodes: int):
        self.path, self.n_inputs, self.n_nodes = path, n_inputs, n_nodes
        width = n_inputs + n_nodes
        size = 1 + 2 * width + n_nodes
        found = os.path.exists(path) and os.path.getsize(path) == size * 8
        if os.path.exists(path) and not found:
            log.warning("%s does not match this worker's links and nodes; starting afresh", path)
        self.restarted = found
        self.array = np.memmap(path, np.int64, mode="r+" if found else "w+", shape=(size,))
        if not found:
            self.array[:] = -1
        self.copies = self.array[1:1 + 2 * width].reshape(2, width)
        self.marks = self.array[1 + 2 * width:]

    @property
    def point(self) -> tuple[list[int], list[int]] | None:
        """(resume sequence number of each input, next sequence number of each node)."""
        current = int(self.array[0])
        if current < 0:
            return None
        copy = self.copies[current].tolist()
        return copy[:self.n_inputs], copy[self.n_inputs:]

    def save(self, inputs: list[int], nodes) -> None:
        spare = 1 if int(self.array[0]) == 0 else 0
        self.copies[spare, :self.n_inputs] = inputs
        self.copies[spare, self.n_inputs:] = nodes
        self.array[0] = spare

    def remove(self) -> None:
        """The worker ended cleanly: the next start is a fresh one."""
        del self.copies, self.marks
        self.array._mmap.close()
        os.unlink(self.path)
