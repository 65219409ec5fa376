"""config.toml: the graph of sources, stages, sinks and links, validated into typed objects.

Layout::

    [graph]                 # optional: name, runner, placement, metrics
    [source.NAME]           # type = "replay" | ..., plus that type's parameters, and
                            # optionally worker = "NAME" (nodes naming one worker share it)
    [stage.NAME]
    [sink.NAME]
    [[link]]                # from, to, mode ("lossless" | "live"), hwm, address

Every mistake (unknown key, wrong type, a value outside its ``Literal`` set or declared range, a
parameter rule or a file named by a parameter that does not hold, missing key, unknown node type,
a link naming a node that does not exist, a cycle, a link whose records the receiving node cannot
use, a link whose packets' sensor size, known before the graph runs, is not the one the
receiving node needs) raises ``ConfigError`` whose message names the file, the line and the
dotted key, and says what was expected. A deprecated parameter name still works and logs a
warning.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Literal

from pipeline.core.nodetype import (
    KINDS,
    path_field,
    SAME,
    SINK,
    SOURCE,
    STAGE,
    ParamError,
    Params,
    describe_records,
    describe_type,
    is_path_field,
    literal_ok,
    param,
    takes,
    type_hints,
)
from pipeline.runtime.links import LOSSLESS, endpoint_problem
from pipeline.runtime.placement import Edge, Placement, place
from pipeline.runtime.registry import lookup

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config mistake; the message names file, line and key."""


@dataclass(frozen=True)
class GraphSettings(Params):
    """The [graph] table: how the whole graph runs and reports."""

    name: str = param("evpipe", "graph name (names the default metrics address and the default "
                                "folder of ipc:// links for `evpipe stage`)")
    runner: Literal["threads", "processes"] = param(
        "threads", "workers are threads of this process, or processes of their own")
    placement: Literal["auto", "per_node"] = param(
        "auto", "auto: nodes joined by lossless links share workers, spread over `cores` "
                "(docs/architecture.md, Placement); per_node: one worker per node")
    cores: int = param(0, "how many workers automatic placement may cut one chain of nodes "
                          "into (processes runner); 0: the cores this process may run on", ge=0)
    metrics_interval_s: float = param(1.0, "period of the per-node metrics reports", unit="s", gt=0)
    metrics_address: str = param("", "PUB address where `evpipe top` reads per-node metrics; "
                                     "empty: ipc://<temp folder>/evpipe-<name>-metrics.sock")
    summary: bool = param(True, "print the end summary table")
    restarts: int = param(3, "processes runner: how many times a worker process that dies (killed, "
                             "crashed) is restarted before the graph gives up and ends with exit "
                             "code 1; 0: never (docs/architecture.md, Recovery)", ge=0)
    restart_backoff_s: float = param(0.1, "wait before the first restart of a worker, doubled at "
                                          "each further one", unit="s", ge=0)

    def check(self):
        super().check()
        if self.metrics_address and endpoint_problem(self.metrics_address):
            raise ParamError("metrics_address", endpoint_problem(self.metrics_address))


@dataclass(frozen=True)
class LinkSettings(Params):
    """A [[link]] table: one ZeroMQ link from a node's output to another node's input."""

    source: str = param(help="name of the sending node (TOML key: from)")
    target: str = param(help="name of the receiving node (TOML key: to)")
    mode: Literal["lossless", "live"] = param(
        LOSSLESS, "lossless: the sender blocks when the receiver lags; live: packets beyond hwm "
                  "are dropped (and counted)")
    hwm: int = param(64, "messages queued at most on each side of the link", ge=1)
    address: str = param("", "ZeroMQ address; empty: inproc (threads) or ipc in the run folder "
                             "(processes)")
    max_message_bytes: int = param(64 * 2**20, "largest message the receiving end accepts "
                                               "(ZMQ_MAXMSGSIZE): a peer that sends more is "
                                               "disconnected", unit="bytes", ge=1)
    exactly_once: bool = param(True, "lossless links: acknowledged resume points, a resend buffer "
                                     "and duplicates dropped by sequence number, so the link "
                                     "survives a restart of either end (docs/architecture.md, "
                                     "Recovery); false: no acknowledgements or buffer")
    resend_packets: int = param(65536, "exactly-once links: packets the sender keeps for a "
                                       "restarted receiver, at most", ge=1)
    resend_bytes: int = param(256 * 2**20, "exactly-once links: payload bytes the sender keeps "
                                           "for a restarted receiver, at most", unit="bytes", ge=1)
    heartbeat_s: float = param(1.0, "both ends say they are alive after this long without "
                                    "sending", unit="s", gt=0)
    peer_timeout_s: float = param(5.0, "a peer not heard from for this long is reported silent "
                                       "(and a tcp connection to it dropped)", unit="s", gt=0)
    curve_server: str = path_field("", "CURVE: base path of the sending end's certificate "
                                       "(.key_secret read by the sender, .key by the receiver); "
                                       "docs/wire.md, Security")
    curve_client: str = path_field("", "CURVE: base path of the receiving end's certificate "
                                       "(.key_secret, read by the receiver)")
    curve_clients: str = path_field("", "CURVE: folder of the client certificates (.key) the "
                                        "sending end accepts")

    def check(self):
        super().check()
        given = [bool(self.curve_server), bool(self.curve_client), bool(self.curve_clients)]
        if any(given) and not all(given):
            key = ("curve_server", "curve_client", "curve_clients")[given.index(False)]
            raise ParamError(key, "a CURVE link names curve_server, curve_client and curve_clients")
        if all(given) and not self.address:
            raise ParamError("curve_server", "a CURVE link needs an address (tcp://HOST:PORT)")
        if self.address and endpoint_problem(self.address):
            raise ParamError("address", endpoint_problem(self.address))
        if self.peer_timeout_s <= self.heartbeat_s:
            raise ParamError("peer_timeout_s", f"must be longer than heartbeat_s "
                                               f"({self.heartbeat_s} s), got {self.peer_timeout_s}")

    @property
    def curve(self) -> bool:
        return bool(self.curve_server)

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"


LINK_KEYS = {"from": "source", "to": "target"}  # TOML key -> LinkSettings field, where they differ


@dataclass(frozen=True)
class NodeSettings:
    name: str
    kind: str
    type: str
    params: object
    worker: str = ""  # the worker the config puts the node in; "": placed by [graph] placement


@dataclass(frozen=True)
class Config:
    path: str
    graph: GraphSettings
    nodes: dict[str, NodeSettings]
    links: list[LinkSettings] = field(default_factory=list)
    placement: Placement | None = None  # which nodes share a worker (pipeline/runtime/placement.py)

    def inputs(self, name: str) -> list[LinkSettings]:
        return [link for link in self.links if link.target == name]

    def outputs(self, name: str) -> list[LinkSettings]:
        return [link for link in self.links if link.source == name]


class _Lines:
    """Line numbers of tables and keys in a TOML text (for error messages)."""

    _table = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
    _key = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")

    def __init__(self, text: str):
        self.lines: dict[tuple, int] = {}
        current: tuple = ()
        arrays: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            table = self._table.match(line)
            if table:
                parts = tuple(p.strip().strip('"') for p in table.group(2).split("."))
                if table.group(1) == "[[":
                    index = arrays.get(table.group(2), 0)
                    arrays[table.group(2)] = index + 1
                    parts = parts + (index,)
                current = parts
                self.lines.setdefault(current, number)
                continue
            key = self._key.match(line)
            if key:
                self.lines.setdefault(current + (key.group(1).strip("\"'"),), number)

    def of(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def _dotted(path: tuple) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else p for p in path).replace(".[", "[")


def _type_ok(value, expected) -> tuple[bool, object]:
    """Whether ``value`` fits annotation ``expected``; returns (ok, converted value)."""
    origin = typing.get_origin(expected)
    if origin is Literal:
        return literal_ok(value, expected), value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(expected):
            ok, converted = _type_ok(value, option)
            if ok:
                return True, converted
        return False, value
    if expected is type(None):
        return value is None, value
    if origin is list:
        (item,) = typing.get_args(expected) or (object,)
        if not isinstance(value, list):
            return False, value
        converted = []
        for element in value:
            ok, element = _type_ok(element, item)
            if not ok:
                return False, value
            converted.append(element)
        return True, converted
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), float(value) if isinstance(value, (int, float)) else value
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if expected is object:
        return True, value
    return isinstance(value, expected), value


def _mismatch(expected, value) -> str:
    got = repr(value) if typing.get_origin(expected) is Literal else f"{type(value).__name__} {value!r}"
    return f"expected {describe_type(expected)}, got {got}"


class _Builder:
    def __init__(self, path: str, text: str):
        self.path = path
        self.where = _Lines(text)
        self.base = os.path.dirname(os.path.abspath(path))

    def location(self, key: tuple) -> str:
        line = self.where.of(key)
        return f"{self.path}:{line}" if line else self.path

    def error(self, key: tuple, message: str) -> ConfigError:
        message = " ".join(str(message).splitlines())
        return ConfigError(f"{self.location(key)}: {_dotted(key)}: {message}")

    def dataclass_from(self, cls, table: dict, key: tuple, skip=(), keys: dict | None = None):
        """An instance of ``Params`` class ``cls`` from a TOML table, checking every key, type,
        range and file; ``keys`` maps TOML keys to field names where they differ."""
        if not isinstance(table, dict):
            raise self.error(key, f"expected a table, got {type(table).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        toml_key = {name: name for name in fields} | {field_name: toml for toml, field_name in (keys or {}).items()}
        by_key = {toml: name for name, toml in toml_key.items()}
        deprecated = {alias: name for name, f in fields.items() for alias in f.metadata.get("aliases", ())}
        hints = type_hints(cls)
        values = {}
        for name, value in table.items():
            if name in skip:
                continue
            if name in deprecated:
                current = toml_key[deprecated[name]]
                if current in table:
                    raise self.error(key + (name,), f"deprecated name of {current}; give only {current}")
                log.warning("%s: %s: deprecated name; write %s", self.location(key + (name,)),
                            _dotted(key + (name,)), current)
                name = current
            if name not in by_key:
                raise self.error(key + (name,), f"unknown key; expected one of: {', '.join(sorted(by_key)) or 'none'}")
            field_name = by_key[name]
            ok, converted = _type_ok(value, hints[field_name])
            if not ok:
                raise self.error(key + (name,), _mismatch(hints[field_name], value))
            if is_path_field(fields[field_name]) and converted and not os.path.isabs(converted) and "://" not in converted:
                converted = os.path.normpath(os.path.join(self.base, converted))
            values[field_name] = converted
        missing = [toml_key[f.name] for f in fields.values() if f.name not in values and
                   f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise self.error(key, f"missing required key(s): {', '.join(missing)}")
        try:
            params = cls(**values)
            params.check_files()
        except ParamError as exc:
            raise self.error(key + (toml_key.get(exc.key, exc.key),), exc.message) from None
        except (TypeError, ValueError) as exc:
            raise self.error(key, str(exc)) from None
        return params

    def node(self, kind: str, name: str, table: dict) -> NodeSettings:
        key = (kind, name)
        if not isinstance(table, dict):
            raise self.error(key, "expected a table")
        type_name = table.get("type")
        if not isinstance(type_name, str):
            raise self.error(key + ("type",), "missing or not a string: name the node type")
        try:
            node_type = lookup(type_name)
        except KeyError as exc:
            raise self.error(key + ("type",), exc.args[0]) from None
        if node_type.kind != kind:
            raise self.error(key + ("type",), f"{type_name!r} is a {node_type.kind}, not a {kind}; "
                                              f"declare it as [{node_type.kind}.{name}]")
        params = self.dataclass_from(node_type.params, table, key, skip=("type", "worker"))
        worker = table.get("worker", "")
        if not isinstance(worker, str) or ("worker" in table and not worker.strip()):
            raise self.error(key + ("worker",), f"expected the name of a worker, got {worker!r}")
        return NodeSettings(name, kind, type_name, params, worker)

    def link(self, index: int, table: dict) -> LinkSettings:
        return self.dataclass_from(LinkSettings, table, ("link", index), keys=LINK_KEYS)


def _check_graph(builder: _Builder, nodes: dict[str, NodeSettings], links: list[LinkSettings]) -> None:
    seen = set()
    for index, link in enumerate(links):
        for end, key in ((link.source, "from"), (link.target, "to")):
            if end not in nodes:
                raise builder.error(("link", index, key), f"no node named {end!r}; nodes: {', '.join(sorted(nodes))}")
        if nodes[link.source].kind == SINK:
            raise builder.error(("link", index, "from"), f"{link.source!r} is a sink and has no outputs")
        if nodes[link.target].kind == SOURCE:
            raise builder.error(("link", index, "to"), f"{link.target!r} is a source and has no inputs")
        if (link.source, link.target) in seen:
            raise builder.error(("link", index), f"duplicate link {link.name}")
        seen.add((link.source, link.target))
    for name, node in nodes.items():
        if node.kind != SOURCE and not any(link.target == name for link in links):
            raise builder.error((node.kind, name), "has no input link")
        if node.kind != SINK and not any(link.source == name for link in links):
            raise builder.error((node.kind, name), "has no output link")
    # cycles: depth-first search with colours
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for link in links:
            if link.source != name:
                continue
            if state.get(link.target) == 1:
                cycle = " -> ".join(trail[trail.index(link.target):] + [name, link.target]) \
                    if link.target in trail else f"{name} -> {link.target}"
                index = links.index(link)
                raise builder.error(("link", index), f"links form a cycle: {cycle}")
            if state.get(link.target) is None:
                visit(link.target, trail + [name])
        state[name] = 2

    for name in nodes:
        if state.get(name) is None:
            visit(name, [])


def _check_records(builder: _Builder, nodes: dict[str, NodeSettings], links: list[LinkSettings]) -> None:
    """Every link carries only record kinds its receiving node takes (the graph has no cycle)."""
    emitted: dict[str, tuple[str, ...]] = {}

    def emits(name: str) -> tuple[str, ...]:
        if name not in emitted:
            node = nodes[name]
            kinds = node.params.emitted()
            if kinds == SAME:
                kinds = tuple(dict.fromkeys(kind for link in links if link.target == name
                                            for kind in emits(link.source)))
            emitted[name] = kinds
        return emitted[name]

    for index, link in enumerate(links):
        source, target = nodes[link.source], nodes[link.target]
        accepted = target.params.accepted()
        refused = [kind for kind in emits(link.source) if not takes(accepted, kind)]
        if refused:
            raise builder.error(("link", index), (
                f"from {link.source} to {link.target}: {link.target} ({target.type}) takes "
                f"{describe_records(accepted)}; {link.source} ({source.type}) emits "
                f"{describe_records(refused)}"))


def _check_sizes(builder: _Builder, nodes: dict[str, NodeSettings], links: list[LinkSettings]) -> None:
    """Every link into a node that needs one sensor size (``Params.input_size``: the snn stage
    needs its model's) carries that size, wherever it is known before the graph runs: set by a
    source that declares it or by a stage that changes it (``Params.output_size``: the scale
    stage), and passed on by the other stages."""
    sizes: dict[str, tuple] = {}  # node -> (size emitted or None, name of the node that set it)

    def size(name: str) -> tuple:
        if name not in sizes:
            node = nodes[name]
            known = {size(link.source) for link in links if link.target == name} - {(None, None)}
            incoming, origin = min(known) if len({s for s, _ in known}) == 1 else (None, None)
            try:
                out = node.params.output_size(incoming)
            except ParamError as exc:
                raise builder.error((node.kind, name, exc.key), exc.message) from None
            sizes[name] = (None, None) if out is None else (out, origin if out == incoming else name)
        return sizes[name]

    for index, link in enumerate(links):
        target = nodes[link.target]
        needed = target.params.input_size()
        got, origin = size(link.source)
        if needed and got and needed != got:
            set_by = "" if origin == link.source else f" (the size of {origin})"
            raise builder.error(("link", index), (
                f"from {link.source} to {link.target}: {link.target} ({target.type}) takes "
                f"{needed[0]} x {needed[1]} px packets; {link.source} sends {got[0]} x {got[1]} "
                f"px{set_by}: map the sensor onto {needed[0]} x {needed[1]} px with a scale "
                f"stage (docs/live.md)"))


def _place(builder: _Builder, graph: GraphSettings, nodes: dict[str, NodeSettings],
           links: list[LinkSettings]) -> Placement:
    """Where each node runs: the ``worker`` keys, the rest by ``graph.placement``."""
    edges = [Edge(link.source, link.target, link.mode != LOSSLESS or bool(link.address))
             for link in links]
    cores = 1 if graph.runner == "threads" else graph.cores or len(os.sched_getaffinity(0))
    placement, found = place(
        list(nodes), {name for name, node in nodes.items() if node.kind == SOURCE}, edges,
        {name: lookup(node.type).weight for name, node in nodes.items()},
        {name: node.worker for name, node in nodes.items() if node.worker},
        graph.placement == "per_node", cores)
    if found:
        problem = found[0]
        key = ("link", problem.link) if problem.link is not None else \
            (nodes[problem.node].kind, problem.node, "worker")
        raise builder.error(key, problem.message)
    return placement


def parse(text: str, path: str = "config.toml", runner: str | None = None) -> Config:
    """The config of TOML ``text`` (``path`` names it in errors); ``runner`` ("threads" or
    "processes") replaces ``[graph] runner`` before the nodes are placed."""
    builder = _Builder(path, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    allowed = {"graph", "link", *KINDS}
    for key in raw:
        if key not in allowed:
            raise builder.error((key,), f"unknown top-level table; expected one of: {', '.join(sorted(allowed))}")
    graph = builder.dataclass_from(GraphSettings, raw.get("graph", {}), ("graph",))
    if runner:
        graph = dataclasses.replace(graph, runner=runner)
    nodes: dict[str, NodeSettings] = {}
    for kind in (SOURCE, STAGE, SINK):
        section = raw.get(kind, {})
        if not isinstance(section, dict):
            raise builder.error((kind,), "expected tables like [%s.NAME]" % kind)
        for name, table in section.items():
            if name in nodes:
                raise builder.error((kind, name), f"node name {name!r} is already used by a {nodes[name].kind}")
            nodes[name] = builder.node(kind, name, table)
    if not nodes:
        raise ConfigError(f"{path}: no [source.*], [stage.*] or [sink.*] tables")
    raw_links = raw.get("link", [])
    if not isinstance(raw_links, list):
        raise builder.error(("link",), "links are an array of tables: write [[link]]")
    links = [builder.link(index, table) for index, table in enumerate(raw_links)]
    _check_graph(builder, nodes, links)
    _check_records(builder, nodes, links)
    _check_sizes(builder, nodes, links)
    return Config(path=path, graph=graph, nodes=nodes, links=links,
                  placement=_place(builder, graph, nodes, links))


def load(path, runner: str | None = None) -> Config:
    """The config of the TOML file ``path`` (``parse``)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse(text, path, runner)
