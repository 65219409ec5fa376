"""Per-file work mapped over a Dask cluster, or run in this process (docs/cluster.md).

A scheduler is named by one string:

- ``none``: every file in this process, one after the other (no Dask needed);
- ``local:N``: a ``dask.distributed.LocalCluster`` of N worker processes with one thread each,
  started for the command and stopped after it;
- an address (``tcp://host:8786``, also ``tls://``, ``ws://``, ``wss://``): a running Dask
  scheduler, whose workers may be on other machines.

``Runner.map(function, items)`` calls ``function(item)`` (or ``function(shared, item)``) for every
item and returns the results in the order of the items, whichever worker ran which: the output
of a command is the same for every scheduler. Workers read the files themselves, so the files
must be visible to every worker at the same path; what travels through Dask is the function (by
reference: evpipe is installed on every worker), the items (paths) and ``shared``, a value sent
once per worker (small parameters, and ``Shipped`` files: the model of an evaluation).

Items go to the workers in batches, about ``BATCHES_PER_THREAD`` per worker thread, one Dask task
each, so that Dask's cost per task is paid per batch.

Faults: a worker that dies has its batches run again on the others (Dask's rescheduling, at most
``distributed.scheduler.allowed-failures`` times a batch, default 3; past that the batch's files
are reported by name as failed). An error of a type listed in ``errors`` fails one file only: it is
logged once, naming the file, and the job goes on. What a file's work logs on a worker (warnings
and errors) is logged again here, in file order, and nowhere else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import logging
import math
import os
import re
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

log = logging.getLogger(__name__)

NONE = "none"
CONNECT_TIMEOUT_S = 10.0
ADDRESS = re.compile(r"^(tcp|tls|ws|wss)://[^\s/:]+(:\d+)?$")
FORMS = ("none, local:N (N worker processes on this machine) or a scheduler address like "
         "tcp://host:8786")
REUSED = 4  # objects kept per thread by ``reused`` (built chains), most recent first
BATCHES_PER_THREAD = 8  # items go to the workers in batches, about this many per worker thread


class SchedulerError(ValueError):
    """A scheduler that cannot be parsed, reached or used; the message is one line."""


def parse_scheduler(text: str) -> tuple[str, int | str | None]:
    """("none", None), ("local", N) or ("address", ADDRESS) from a ``--scheduler`` value;
    SchedulerError naming the value and the accepted forms otherwise."""
    value = text.strip()
    if value == NONE:
        return NONE, None
    if value.startswith("local:"):
        count = value[len("local:"):]
        if not count.isdigit() or int(count) < 1:
            raise SchedulerError(f"--scheduler {text}: the number of local workers must be a whole "
                                 f"number >= 1")
        return "local", int(count)
    if ADDRESS.match(value):
        return "address", value
    raise SchedulerError(f"--scheduler {text}: expected {FORMS}")


def add_arguments(parser) -> None:
    """The ``--scheduler`` and ``--scheduler-timeout`` options of the commands that map files."""
    parser.add_argument("--scheduler", default=NONE, metavar="S",
                        help=f"where the per-file work runs: {FORMS} (default none: this process; "
                             "docs/cluster.md)")
    parser.add_argument("--scheduler-timeout", type=float, default=CONNECT_TIMEOUT_S, metavar="SEC",
                        help=f"seconds to wait for a scheduler address to answer and for its first "
                             f"worker (default {CONNECT_TIMEOUT_S:g})")


@dataclass(frozen=True)
class Shipped:
    """A small file (a model, prototypes) sent to the workers by content, not by path: ``path()``
    writes it once per process into a temporary folder, named by its SHA-256, and returns where.
    Files the client made in its own temporary folder thus reach workers on other machines."""

    content: bytes = field(repr=False, compare=False)
    suffix: str
    digest: str = ""  # SHA-256 of content, hex; set on construction

    def __post_init__(self):
        object.__setattr__(self, "digest", hashlib.sha256(self.content).hexdigest())

    @classmethod
    def read(cls, path) -> Shipped:
        with open(path, "rb") as handle:
            return cls(handle.read(), os.path.splitext(os.fspath(path))[1])

    def path(self) -> str:
        target = os.path.join(_scratch(), self.digest + self.suffix)
        if not os.path.exists(target):
            partial = f"{target}.{threading.get_ident()}.part"
            with open(partial, "wb") as handle:
                handle.write(self.content)
            os.replace(partial, target)
        return target


_SCRATCH: list[tempfile.TemporaryDirectory] = []


def _scratch() -> str:
    """This process's folder for shipped files, removed when the process exits."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="evpipe-shipped-"))
    return _SCRATCH[0].name


_LOCAL = threading.local()


def reused(key, build: Callable[[], Any]):
    """The object ``build()`` made for ``key`` in this thread, built on first use: a worker
    builds a chain of stages once and runs file after file through it. Keys hold what the
    object depends on (a shipped file's digest, parameters); the ``REUSED`` most recent stay."""
    cache = getattr(_LOCAL, "cache", None)
    if cache is None:
        cache = _LOCAL.cache = OrderedDict()
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    cache[key] = built = build()
    while len(cache) > REUSED:
        cache.popitem(last=False)
    return built


@dataclass
class Mapped:
    """Results of ``Runner.map``: one per item in the items' order (None where it failed), and
    the one-line messages of the items that failed (already logged), in the items' order."""

    results: list
    failed: list[str]


def _failure(item, exc: BaseException) -> str:
    """One line naming the item and what went wrong (errors that name the file are kept as is)."""
    text, name = str(exc), os.fspath(getattr(item, "path", item))
    return text if name in text else f"{name}: {text or type(exc).__name__}"


class _Kept(logging.Handler):
    """Keeps the WARNING-and-above records of one thread as (logger, level, message)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.records.append((record.name, record.levelno, record.getMessage()))


def _on_worker(function, errors, batch, *shared) -> list[tuple]:
    """Runs on a worker: ``function(*shared, item)`` for each item of ``batch``, with its log
    records kept, not printed, so the client reports them once. Returns, per item, (result,
    failure message or None, records)."""
    out = []
    root = logging.getLogger()
    for item in batch:
        kept = _Kept()
        root.addHandler(kept)
        try:
            out.append((function(*shared, item), None, kept.records))
        except errors as exc:
            out.append((None, _failure(item, exc), kept.records))
        finally:
            root.removeHandler(kept)
    return out


def _absolute(item):
    """A path, or a dataclass with a ``path`` field, with the path made absolute against this
    process's working folder; other items as they are."""
    if isinstance(item, (str, os.PathLike)):
        return os.path.abspath(item)
    path = getattr(item, "path", None)
    if dataclasses.is_dataclass(item) and isinstance(path, (str, os.PathLike)):
        return dataclasses.replace(item, path=os.path.abspath(path))
    return item


def _same(value):
    """The shared value, as one task's result: it travels once per worker, and a worker that
    dies holding it makes the scheduler compute it again (scattered data would be lost)."""
    return value


class Runner:
    """Runs per-file work in this process (``client`` None) or on a Dask cluster."""

    def __init__(self, client=None, remote: bool = False):
        self.client = client
        self.remote = remote  # workers with working folders of their own (a scheduler address)

    def map(self, function: Callable, items: Sequence, label: str = "", shared=None,
            errors: tuple[type[BaseException], ...] = ()) -> Mapped:
        """``function(item)``, or ``function(shared, item)`` when ``shared`` is given, for every
        item, in the items' order; a progress bar named ``label`` counts the items done
        (across workers). An exception of a type in ``errors`` fails its item only (logged once,
        naming it); any other propagates. ``function`` must be importable by the workers (a
        module-level function, or a ``functools.partial`` of one with small arguments)."""
        front = () if shared is None else (shared,)
        mapped = Mapped([None] * len(items), [])
        with tqdm(total=len(items), desc=label, unit="file", disable=None if label else True,
                  leave=False) as bar:
            if self.client is None:
                for i, item in enumerate(items):
                    try:
                        mapped.results[i] = function(*front, item)
                    except errors as exc:
                        self._failed(mapped, _failure(item, exc))
                    bar.update()
            else:
                self._distributed(function, items, front, errors, mapped, bar)
        return mapped

    @staticmethod
    def _failed(mapped: Mapped, message: str) -> None:
        log.error("%s", message)
        mapped.failed.append(message)

    def _distributed(self, function, items, front, errors, mapped: Mapped, bar) -> None:
        """Items in batches (one task each: Dask's cost per task, a few ms on a busy 2-core
        machine, is paid per batch), about BATCHES_PER_THREAD per worker thread so that the
        batches spread evenly and a worker that dies costs little work again."""
        from distributed import KilledWorker, as_completed

        threads = sum(w["nthreads"] for w in self.client.scheduler_info()["workers"].values())
        size = max(1, math.ceil(len(items) / (max(threads, 1) * BATCHES_PER_THREAD)))
        starts = range(0, len(items), size)
        shared = tuple(self.client.submit(_same, value, pure=False) for value in front)
        sent = [_absolute(item) for item in items] if self.remote else items
        futures = [self.client.submit(_on_worker, function, errors, sent[i:i + size], *shared,
                                      pure=False, priority=-i) for i in starts]
        first = {future.key: i for i, future in zip(starts, futures)}
        pending = as_completed(futures)
        del futures  # a result once gathered is released, so a worker that dies later owes none
        done: list = [None] * len(items)
        reported = 0  # items before this one are reported: logs and failures, in item order
        for future in pending:
            i = first[future.key]
            try:
                done[i:i + size] = future.result()
            except KilledWorker as exc:
                message = (f"the workers running it (in a batch of {size} files) died "
                           f"{exc.allowed_failures + 1} times")
                done[i:i + size] = [(None, _failure(item, RuntimeError(message)), [])
                                    for item in items[i:i + size]]
            future.release()
            bar.update(len(items[i:i + size]))
            while reported < len(items) and done[reported] is not None:
                result, failure, records = done[reported]
                for name, level, message in records:
                    logging.getLogger(name).log(level, "%s", message)
                if failure is not None:
                    self._failed(mapped, failure)
                mapped.results[reported] = result
                done[reported] = ()  # reported; its result now lives in mapped
                reported += 1


@contextlib.contextmanager
def connect(scheduler: str = NONE, timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Runner]:
    """A ``Runner`` for a ``--scheduler`` value (``parse_scheduler``): a local cluster is started
    and stopped around the block, an address is connected to (``timeout_s``: seconds to answer
    and to have a worker). SchedulerError, in one line, when that cannot be done."""
    kind, value = parse_scheduler(scheduler)
    if not timeout_s > 0:
        raise SchedulerError(f"--scheduler-timeout must be > 0 s, got {timeout_s:g}")
    if kind == NONE:
        yield Runner()
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SchedulerError(f"--scheduler {scheduler} needs dask.distributed: pip install "
                             f"'evpipe[cluster]'") from None
    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet(logging.getLogger("distributed")))
        if kind == "local":
            # the HTTP server (dashboard, health) on a free loopback port: never a clash
            cluster = stack.enter_context(LocalCluster(
                n_workers=value, threads_per_worker=1, processes=True,
                dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(_reach(value, timeout_s))
        _check_workers(client, scheduler, timeout_s)
        yield Runner(client, remote=kind == "address")


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    """Dask's own INFO lines (start, connections, shutdown) are not shown in the command's
    output; its warnings and errors are."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _reach(address: str, timeout_s: float):
    from distributed import Client

    try:
        return Client(address, timeout=timeout_s)
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(f"--scheduler {address}: no Dask scheduler answered within "
                             f"{timeout_s:g} s ({type(exc).__name__})") from None


def _check_workers(client, where, timeout_s: float) -> None:
    """SchedulerError unless a worker has joined within ``timeout_s`` and every worker has this
    evpipe version installed."""
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except TimeoutError:
        raise SchedulerError(f"--scheduler {where}: no worker joined within {timeout_s:g} s; "
                             f"start workers with `dask worker {where}`") from None
    ours = importlib.metadata.version("evpipe")
    try:
        theirs = client.run(importlib.metadata.version, "evpipe", on_error="return")
    except OSError as exc:
        raise SchedulerError(f"--scheduler {where}: cannot reach its workers ({exc})") from None
    wrong = {worker: str(v) for worker, v in theirs.items() if v != ours}
    if wrong:
        raise SchedulerError(f"--scheduler {where}: workers without evpipe {ours} installed "
                             f"(pip install 'evpipe[cluster]' on each): {wrong}")


def map_files(function: Callable, paths: Sequence, scheduler: str = NONE, label: str = "",
              errors: tuple[type[BaseException], ...] = (), timeout_s: float = CONNECT_TIMEOUT_S,
              shared=None) -> Mapped:
    """``Runner.map`` on a runner connected to ``scheduler`` for this one call: ``function(path)``
    (or ``function(shared, path)``) for every path, results in the paths' order, errors of the
    types in ``errors`` reported once per file without stopping the others."""
    with connect(scheduler, timeout_s) as runner:
        return runner.map(function, paths, label, shared, errors)
