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

import fcntl
import logging
import os
from collections import deque

import numpy as np

log = logging.getLogger(__name__)


def resume_path(folder: str, nodes) -> str:
    """The resume file of the worker running ``nodes`` (names, in order) in ``folder``."""
    return os.path.join(folder, "+".join(nodes) + ".resume")


class FolderInUse(Exception):
    """Another live process runs the same node with the same run folder."""


def hold(folder: str, name: str) -> int:
    """Lock ``<folder>/<name>.lock`` for the life of this process (``flock``; the kernel releases
    it when the process ends, however it ends) and return its descriptor: two processes of one
    node sharing a run folder would share its resume file and its receivers' resume points.
    FolderInUse names the file when another process holds it."""
    path = os.path.join(folder, f"{name}.lock")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise FolderInUse(f"node {name!r} already runs with run folder {folder} ({path} is locked "
                          f"by another process): stop it, or give this one another --run-dir") from None
    return descriptor


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


class Recovery:
    """The recovery bookkeeping of one worker running ``nodes`` (names, in order) with
    ``n_inputs`` inputs (its socket inputs, or 1 for its source), its file in ``folder``.

    ``resume_seqs``: the resume point of each input, as saved (-1: none); ``node_seqs``: each
    node's next sequence number at the saved point (None when there is none); ``restarted``: an
    earlier process of the worker died. ``sinks_only``: the worker holds no state but its sinks'
    marks, so any packet is a resume point."""

    def __init__(self, folder: str, nodes, n_inputs: int, sinks_only: bool):
        nodes = list(nodes)
        self.file = ResumeFile(resume_path(folder, nodes), n_inputs, len(nodes))
        self.restarted = self.file.restarted
        self.sinks_only = sinks_only
        point = self.file.point
        self.resume_seqs, self.node_seqs = point if point else ([-1] * n_inputs, None)
        self.candidates: deque = deque()  # (input index, seq, every node's next seq)
        self.pointed: set[int] = set()  # inputs given a candidate since the worker last waited

    def start_seq(self, index: int) -> int | None:
        """Where input ``index`` resumes: None on a fresh start, else its saved point (0 when the
        worker died before saving one)."""
        return max(self.resume_seqs[index], 0) if self.restarted else None

    def note(self, index: int, seq: int, packet, node_seqs) -> None:
        """Before the worker handles ``packet`` (sequence number ``seq``) of input ``index``: a
        candidate resume point when it starts a segment or, on a stream without segments (or in
        a worker of sinks alone), when it is the first since the worker last waited.
        ``node_seqs()`` gives every node's next sequence number."""
        segment = packet.header.segment
        if segment is None or self.sinks_only:
            if index in self.pointed:
                return
            self.pointed.add(index)
        elif not segment.start:
            return
        self.candidates.append((index, seq, node_seqs()))

    def advance(self, acked) -> bool:
        """Save the newest candidate that every downstream receiver has passed: ``acked`` lists
        (resume seq a receiver acknowledged, index of the node whose packets it receives). True
        when a newer point was saved (``resume_seqs`` then says what to acknowledge upstream)."""
        self.pointed.clear()
        safe = None
        while self.candidates:
            index, seq, seqs = self.candidates[0]
            if any(seen < seqs[node] for seen, node in acked):
                break
            self.candidates.popleft()
            self.resume_seqs[index] = seq
            safe = seqs
        if safe is None:
            return False
        self.file.save(self.resume_seqs, safe)
        return True

    def mark(self, node: int, seq: int) -> None:
        """Sink ``node`` has delivered what packet ``seq`` carried."""
        self.file.marks[node] = seq

    def marks(self) -> list[int]:
        return self.file.marks.tolist()

    def ended(self) -> None:
        """The worker ended cleanly: the next start is a fresh one."""
        self.file.remove()
