"""Running a whole graph: its workers (``Config.placement``) as threads of this process, or as
processes of their own.

The orchestrator binds the metrics collector, starts every worker, republishes metrics for
``evpipe top`` and prints the end summary. SIGINT/SIGTERM stop the sources, so in-flight packets
drain, sinks flush and the run exits 0. A node that fails makes the orchestrator stop the
sources too, and the run exits 1 once the graph has drained. A worker process that dies without
ending its streams (killed, or failed while starting) cannot be drained: when the graph has not
drained ``DRAIN_TIMEOUT_S`` after the sources were stopped, the remaining processes are killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field

import setproctitle
import zmq

from pipeline.core.nodetype import SOURCE
from pipeline.runtime.config import Config, ConfigError, load
from pipeline.runtime.metrics import END_TOPIC, SNAPSHOT_TOPIC, metrics_address, summary_table
from pipeline.security import CertificateError, check_link
from pipeline.runtime.worker import STOP_DRAIN_S, Worker

log = logging.getLogger(__name__)

# after the stop: the workers' blocked sends give up by themselves (``STOP_DRAIN_S``), each
# reporting what it could not deliver; what still runs some seconds later is killed
DRAIN_TIMEOUT_S = STOP_DRAIN_S + 5.0
CRASHED = 3  # exit code of a worker process whose runtime broke (not a node's failure)
START_POLL_MS = 5  # how often the orchestrator looks for the last worker to open, until it has
PUBLISH_LINGER_MS = 1000  # how long closing waits to deliver the last metrics to `evpipe top`


@dataclass
class RunResult:
    ok: bool
    snapshots: dict[str, dict] = field(default_factory=dict)  # node -> final metrics
    ready_s: float | None = None  # from the start of the run until every worker was ready
    streamed_s: float | None = None  # from then (the sources started) until the graph ended

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


class Collector:
    """Receives node metrics (PULL), keeps the newest per node, republishes them (PUB on the
    graph's ``metrics_address``) and announces the end of the graph there."""

    def __init__(self, ctx: zmq.Context, address: str, config: Config):
        self.ctx, self.address, self.graph = ctx, address, config.graph.name
        self.sock = ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.RCVHWM, 1024)
        self.sock.bind(address)
        publish = metrics_address(config.graph)
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 1024)
        self.pub.setsockopt(zmq.LINGER, PUBLISH_LINGER_MS)
        self._socket_file = None  # (path, inode) of the ipc socket file bound here
        try:
            self.pub.bind(publish)
        except zmq.ZMQError as exc:
            self.close()
            raise ConfigError(f"{config.path}: [graph] metrics_address {publish!r}: cannot "
                              f"publish metrics there ({exc})") from None
        if publish.startswith("ipc://"):
            path = publish[len("ipc://"):]
            with contextlib.suppress(OSError):  # no file: an abstract socket (ipc://@name)
                self._socket_file = (path, os.stat(path).st_ino)
        self.latest: dict[str, dict] = {}
        self.finals: dict[str, dict] = {}
        self.restarts: dict[str, int] = {}  # node -> restarts of its worker, set by the supervisor

    def poll(self, timeout_ms: int) -> None:
        while self.sock.poll(timeout_ms, zmq.POLLIN):
            timeout_ms = 0
            raw = self.sock.recv()
            try:
                snap = json.loads(raw)
                node = snap["node"]
            except (ValueError, KeyError, TypeError):
                log.warning("malformed metrics message ignored: %r", raw[:80])
                continue
            if node in self.restarts:
                snap["restarts"] = self.restarts[node]
                raw = json.dumps(snap).encode()
            self.latest[node] = snap
            if snap.get("final"):
                self.finals[node] = snap
            self.pub.send_multipart([SNAPSHOT_TOPIC, raw])  # PUB never blocks: a full subscriber misses it

    def announce_end(self, ok: bool) -> None:
        """Tell ``evpipe top`` the graph has ended, and whether every node ended well."""
        self.pub.send_multipart([END_TOPIC, json.dumps({"graph": self.graph, "ok": ok}).encode()])

    def close(self) -> None:
        """Close both sockets and remove the ipc socket file bound here (libzmq leaves it),
        unless another graph of the same name has bound that path since."""
        self.sock.close()
        self.pub.close()
        if self._socket_file is not None:
            path, inode = self._socket_file
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:
                    os.unlink(path)


class _Signals:
    """Installs SIGINT/SIGTERM handlers calling ``on_stop`` (main thread only), restores them."""

    def __init__(self, on_stop):
        self.on_stop = on_stop
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, lambda *_: self.on_stop())
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _Start:
    """The start line of a run: every worker opens its links and then reports ``opened``; the
    sources start (``go``) once all have, or once one has ended early (failed while starting),
    so no source streams into a graph that is still loading its stages."""

    def __init__(self, opened: dict, go):
        self.opened, self.go = opened, go
        self.began = time.monotonic()
        self.went: float | None = None
        self.went_ns = 0  # the start signal in host ns (``time.time_ns()``)

    def check(self, ended) -> None:
        """Give the start signal when every worker has opened or any has ended."""
        if self.went is None and (all(event.is_set() for event in self.opened.values()) or ended):
            self.go.set()
            self.went, self.went_ns = time.monotonic(), time.time_ns()

    def timing(self, finals: list[dict]) -> tuple[float | None, float | None]:
        """(s until the start signal, s from it until the graph ended): until the last of the
        nodes' ``finals`` (their final snapshots, stamped ``time_ns`` once a node's streams have
        ended, in this host's clock) when there are any, else until now. Ending at the last
        final snapshot leaves out what follows the work: worker processes exiting and this loop
        noticing it (up to its 100 ms poll)."""
        if self.went is None:
            return None, None
        streamed = (max(snap["time_ns"] for snap in finals) - self.went_ns) / 1e9 if finals \
            else time.monotonic() - self.went
        return self.went - self.began, streamed


def _finish(collector: Collector, config: Config, ok: bool, start: _Start) -> RunResult:
    snapshots = {name: collector.finals.get(name) or collector.latest.get(name)
                 for name in config.nodes}
    missing = [name for name, snap in snapshots.items() if snap is None]
    if missing:
        log.error("no final metrics from %s", ", ".join(missing))
    snapshots = {name: snap for name, snap in snapshots.items() if snap is not None}
    ok = ok and not missing and not any(snap.get("error") for snap in snapshots.values())
    collector.announce_end(ok)
    ready_s, streamed_s = start.timing([snap for snap in snapshots.values() if snap.get("final")])
    if config.graph.summary and snapshots:
        print(summary_table(list(snapshots.values())), flush=True)
        if ready_s is not None:
            print(f"{len(config.placement.workers)} worker {config.graph.runner} "
                  f"({config.placement.describe()}): ready in {ready_s:.2f} s, streamed for "
                  f"{streamed_s:.2f} s", flush=True)
    return RunResult(ok, snapshots, ready_s, streamed_s)


def _open_collector(cleanup: contextlib.ExitStack, address: str, config: Config) -> Collector:
    """A collector on a new context, both closed when ``cleanup`` exits."""
    ctx = zmq.Context()
    cleanup.callback(ctx.term)
    collector = Collector(ctx, address, config)
    cleanup.callback(collector.close)
    return collector


def run_threads(config: Config, stop_event: threading.Event | None = None) -> RunResult:
    """Run every worker of ``config`` in its own thread of this process."""
    with contextlib.ExitStack() as cleanup:
        collector = _open_collector(cleanup, f"inproc://evpipe-metrics-{id(config)}", config)
        plans = config.placement.workers
        start = _Start({plan.name: threading.Event() for plan in plans}, threading.Event())
        workers = [Worker(config, plan.nodes, collector.ctx, collector=collector.address,
                          direct=config.placement.direct, opened=start.opened[plan.name],
                          go=start.go) for plan in plans]

        refused: list[ConfigError] = []

        def target(worker: Worker) -> None:
            try:
                worker.run()
            except ConfigError as exc:  # a link it cannot bind: its streams never start or end,
                refused.append(exc)  # so every worker stops and gives up on them
                for each in workers:
                    each.stop()
                return
            if worker.failed:
                stop_sources()

        def stop_sources() -> None:
            for worker in workers:
                if worker.source is not None:
                    worker.stop()

        threads = [threading.Thread(target=target, args=(worker,), name=f"evpipe-{plan.name}",
                                    daemon=True)
                   for worker, plan in zip(workers, plans)]
        with _Signals(stop_sources):
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                start.check(ended=not all(thread.is_alive() for thread in threads))
                collector.poll(START_POLL_MS if start.went is None else 100)
                if stop_event is not None and stop_event.is_set():
                    stop_sources()
            collector.poll(200)
        if refused:
            raise refused[0]
        ok = not any(worker.failed for worker in workers)
        return _finish(collector, config, ok, start)


def _child(config_path: str, names: tuple[str, ...], direct: list, run_dir: str, collector: str,
           ready, opened, go) -> None:
    """Entry point of a worker process: SIGINT is left to the orchestrator, SIGTERM stops; sets
    ``ready`` once SIGTERM is handled (until then the orchestrator holds it back), ``opened``
    once its links are open; a source starts at ``go``. Exit code 0: ended well; 1: a node
    failed and the worker drained; ``CRASHED``: the worker's own code broke (restarted like a
    killed one)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    label = "+".join(names)
    setproctitle.setproctitle(f"evpipe:{label}")  # what `ps` and `top` show for this worker
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s [{label}] %(message)s")
    try:
        config = load(config_path)
        ctx = zmq.Context()
        worker = Worker(config, names, ctx, "processes", run_dir=run_dir, collector=collector,
                        direct=frozenset(map(tuple, direct)), opened=opened, go=go,
                        resume_dir=run_dir)
        signal.signal(signal.SIGTERM, lambda *_: worker.interrupt())
        ready.set()
        worker.run()
        ctx.term()
    except ConfigError as exc:  # a link it cannot bind: one line, restarted like a crash
        log.error("worker %s: %s", label, exc)
        os._exit(CRASHED)
    except Exception:  # a bug of the runtime itself: logged, and the worker is restarted
        log.exception("worker %s crashed", label)
        os._exit(CRASHED)
    os._exit(1 if worker.failed else 0)


class _SourceStops:
    """SIGTERMs for the source processes. ``request`` (also from a signal handler) asks each
    source to stop once more (a second time: give up on blocked sends); ``deliver`` sends what
    is due to each live source that is ready: before its handler is set, SIGTERM would kill the
    process while it starts, and its stream could never end."""

    def __init__(self, procs: dict, ready: dict, sources: list[str]):
        self.procs, self.ready = procs, ready
        self.sent = dict.fromkeys(sources, 0)
        self.wanted = 0
        self.first_at: float | None = None  # monotonic time of the first request

    def request(self) -> None:
        self.wanted += 1
        if self.first_at is None:
            self.first_at = time.monotonic()

    def restarted(self, name: str) -> None:
        """A new process runs worker ``name``: it has been asked nothing yet."""
        if name in self.sent:
            self.sent[name] = 0

    def deliver(self) -> None:
        for name, sent in self.sent.items():
            proc = self.procs[name]
            if sent < self.wanted and proc.is_alive() and self.ready[name].is_set():
                for _ in range(self.wanted - sent):
                    os.kill(proc.pid, signal.SIGTERM)
                self.sent[name] = self.wanted


def _ending(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


class _Supervisor:
    """Starts the worker processes and restarts one that dies (killed, or ``CRASHED``) after
    ``restart_backoff_s``, doubled at each further restart of it, at most ``restarts`` times;
    a restarted worker resumes from its resume points (``pipeline.runtime.recovery``). When a
    worker has died once more than that, the supervisor gives up: it stops every other worker
    (once: a second SIGTERM would abort, and two sent back to back may arrive as one), so the
    sources end their streams, the workers beside the dead one give up on it after the peer
    timeout, every sink flushes what it received, and the run exits 1."""

    def __init__(self, config: Config, spawn, make_args, procs: dict, ready: dict,
                 stops: _SourceStops, collector: Collector):
        self.config, self.spawn, self.make_args = config, spawn, make_args
        self.ready, self.stops, self.collector = ready, stops, collector
        self.plans = {plan.name: plan for plan in config.placement.workers}
        self.procs = procs  # worker name -> its current process, shared with ``stops``
        self.restarts = dict.fromkeys(ready, 0)
        self.due: dict[str, float] = {}  # worker -> monotonic time of its restart
        self.gave_up = False

    def start(self, name: str) -> None:
        self.procs[name] = self.spawn.Process(target=_child, name=f"evpipe-{name}",
                                              args=self.make_args(name))
        self.procs[name].start()

    @property
    def running(self) -> bool:
        return bool(self.due) or any(proc.is_alive() for proc in self.procs.values())

    def died(self) -> list[str]:
        """Workers that ended without ending their streams and are not yet being restarted."""
        return [name for name, proc in self.procs.items()
                if proc.exitcode not in (None, 0, 1) and name not in self.due]

    def watch(self) -> None:
        """Schedule the restart of every worker that died; start those that are due."""
        now = time.monotonic()
        for name in self.died():
            if self.gave_up:
                continue
            code = self.procs[name].exitcode
            nodes = "+".join(self.plans[name].nodes)
            if self.restarts[name] >= self.config.graph.restarts:
                log.error("worker %s (%s) %s, and it was restarted %d time(s) already: giving up; "
                          "ending the graph", name, nodes, _ending(code), self.restarts[name])
                self.give_up()
                continue
            delay = self.config.graph.restart_backoff_s * 2 ** self.restarts[name]
            self.restarts[name] += 1
            self.due[name] = now + delay
            log.warning("worker %s (%s) %s; restarting it in %.1f s (restart %d of at most %d)",
                        name, nodes, _ending(code), delay, self.restarts[name],
                        self.config.graph.restarts)
            for node in self.plans[name].nodes:
                self.collector.restarts[node] = self.restarts[name]
        for name, at in list(self.due.items()):
            if now >= at:
                del self.due[name]
                self.ready[name].clear()
                self.stops.restarted(name)
                self.start(name)

    def give_up(self) -> None:
        """Stop every other worker: the sources through ``stops`` (once ready), the rest with
        one SIGTERM now (a worker still starting ends by it: it has taken nothing yet)."""
        self.gave_up = True
        self.due.clear()
        self.stops.request()
        for name, proc in self.procs.items():
            if name not in self.stops.sent and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)


def run_processes(config: Config) -> RunResult:
    """Run every worker of ``config`` in its own process (spawned), linked over ipc by default,
    under a ``_Supervisor``."""
    with contextlib.ExitStack() as cleanup:
        run_dir = tempfile.mkdtemp(prefix="evpipe-")
        cleanup.callback(shutil.rmtree, run_dir, ignore_errors=True)
        collector = _open_collector(cleanup, f"ipc://{run_dir}/metrics.sock", config)
        spawn = multiprocessing.get_context("spawn")
        plans = {plan.name: plan for plan in config.placement.workers}
        ready = {name: spawn.Event() for name in plans}
        start = _Start({name: spawn.Event() for name in plans}, spawn.Event())
        direct = sorted(config.placement.direct)

        def make_args(name: str) -> tuple:
            return (os.path.abspath(config.path), plans[name].nodes, direct, run_dir,
                    collector.address, ready[name], start.opened[name], start.go)

        sources = [name for name, plan in plans.items()
                   if any(config.nodes[node].kind == SOURCE for node in plan.nodes)]
        procs: dict = {}
        stops = _SourceStops(procs, ready, sources)
        supervisor = _Supervisor(config, spawn, make_args, procs, ready, stops, collector)

        with _Signals(stops.request):
            for name in plans:
                supervisor.start(name)
            while supervisor.running:
                start.check(ended=any(proc.exitcode is not None for proc in procs.values()))
                collector.poll(START_POLL_MS if start.went is None else 100)
                if stops.wanted == 0 and any(p.exitcode == 1 for p in procs.values()):
                    stops.request()  # a node failed: stop the sources, let the graph drain
                supervisor.watch()
                stops.deliver()
                if stops.first_at is not None and time.monotonic() - stops.first_at > DRAIN_TIMEOUT_S:
                    stuck = supervisor.gave_up or any(p.exitcode == 1 for p in procs.values())
                    if stuck and not supervisor.due:
                        log.error("the graph did not drain within %.0f s of the stop; ending the "
                                  "rest", DRAIN_TIMEOUT_S)
                        for proc in procs.values():
                            if proc.is_alive():
                                proc.kill()  # SIGTERM would only ask for the drain that cannot come
                        break
            for proc in procs.values():
                proc.join(5)
            collector.poll(200)
        ok = all(proc.exitcode == 0 for proc in procs.values()) and not supervisor.gave_up
        for name, proc in procs.items():
            if proc.exitcode != 0:
                log.error("worker %r ended: %s", name, _ending(proc.exitcode))
        return _finish(collector, config, ok, start)


def check_certificates(config: Config, nodes=None) -> None:
    """ConfigError naming the link and the file when a CURVE link's certificate files that the
    ends run here (all of ``config``, or ``nodes``) would read are missing."""
    here = set(config.nodes if nodes is None else nodes)
    for index, link in enumerate(config.links):
        if link.curve:
            try:
                check_link(link.curve_server, link.curve_client, link.curve_clients,
                           link.source in here, link.target in here)
            except CertificateError as exc:
                raise ConfigError(f"{config.path}: link[{index}] ({link.name}): {exc}") from None


def run(config: Config) -> RunResult:
    check_certificates(config)
    log.info("graph %r, %d worker %s: %s", config.graph.name, len(config.placement.workers),
             config.graph.runner, config.placement.describe())
    return run_threads(config) if config.graph.runner == "threads" else run_processes(config)


def run_one(config: Config, name: str, run_dir: str, collector: str = "") -> int:
    """Run a single node in this process, every link a socket (``evpipe stage``);
    SIGINT/SIGTERM stop it gracefully. Its resume points live in ``run_dir``: started again
    after its process died (by systemd, Kubernetes, a shell loop), it resumes from them like a
    worker the processes runner restarts."""
    setproctitle.setproctitle(f"evpipe:{name}")
    check_certificates(config, [name])
    ctx = zmq.Context()
    worker = Worker(config, [name], ctx, "processes", run_dir=run_dir, collector=collector,
                    standalone=True, resume_dir=run_dir)
    with _Signals(worker.interrupt):
        finals = worker.run()
    ctx.term()
    if config.graph.summary:
        print(summary_table(list(finals.values())), flush=True)
    return 1 if worker.failed else 0
