"""config.toml: the graph of sources, stages, sinks and links, validated into typed objects.

Layout::

    [graph]                 # optional: name, runner ("threads" | "processes"), metrics
    [source.NAME]           # type = "replay" | ..., plus that type's parameters
    [stage.NAME]
    [sink.NAME]
    [[link]]                # from, to, mode ("lossless" | "live"), hwm, address

Every mistake (unknown key, wrong type, missing key, unknown node type, a link naming a node that
does not exist, a cycle) raises ``ConfigError`` whose message names the file, the line and the
dotted key, and says what was expected.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field

from pipeline.core.nodetype import KINDS, SINK, SOURCE, STAGE, is_path_field
from pipeline.runtime.links import LOSSLESS, MODES
from pipeline.runtime.registry import lookup

RUNNERS = ("threads", "processes")


class ConfigError(ValueError):
    """A config mistake; the message names file, line and key."""


@dataclass(frozen=True)
class GraphSettings:
    name: str = "evpipe"
    runner: str = "threads"
    metrics_interval_s: float = 1.0
    metrics_address: str = ""  # PUB address where `evpipe top` reads per-stage metrics
    summary: bool = True  # print the end summary table


@dataclass(frozen=True)
class LinkSettings:
    source: str
    target: str
    mode: str = LOSSLESS
    hwm: int = 64  # messages queued at most on each side of the link
    address: str = ""  # default: inproc (threads) or ipc in the run folder (processes)

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"


LINK_KEYS = {"from": str, "to": str, "mode": str, "hwm": int, "address": str}


@dataclass(frozen=True)
class NodeSettings:
    name: str
    kind: str
    type: str
    params: object


@dataclass(frozen=True)
class Config:
    path: str
    graph: GraphSettings
    nodes: dict[str, NodeSettings]
    links: list[LinkSettings] = field(default_factory=list)

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


def _describe(expected) -> str:
    return getattr(expected, "__name__", None) or str(expected).replace("typing.", "")


class _Builder:
    def __init__(self, path: str, text: str):
        self.path = path
        self.where = _Lines(text)
        self.base = os.path.dirname(os.path.abspath(path))

    def error(self, key: tuple, message: str) -> ConfigError:
        line = self.where.of(key)
        location = f"{self.path}:{line}" if line else self.path
        return ConfigError(f"{location}: {_dotted(key)}: {message}")

    def dataclass_from(self, cls, table: dict, key: tuple, skip=()):
        """An instance of dataclass ``cls`` from a TOML table, checking every key and type."""
        if not isinstance(table, dict):
            raise self.error(key, f"expected a table, got {type(table).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        values = {}
        for name, value in table.items():
            if name in skip:
                continue
            if name not in fields:
                raise self.error(key + (name,), f"unknown key; expected one of: {', '.join(sorted(fields)) or 'none'}")
            ok, converted = _type_ok(value, hints[name])
            if not ok:
                raise self.error(key + (name,), f"expected {_describe(hints[name])}, got {type(value).__name__} {value!r}")
            if is_path_field(fields[name]) and converted and not os.path.isabs(converted) and "://" not in converted:
                converted = os.path.normpath(os.path.join(self.base, converted))
            values[name] = converted
        missing = [f.name for f in fields.values() if f.name not in values and
                   f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise self.error(key, f"missing required key(s): {', '.join(missing)}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise self.error(key, str(exc)) from None

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
        params = self.dataclass_from(node_type.params, table, key, skip=("type",))
        return NodeSettings(name, kind, type_name, params)

    def link(self, index: int, table: dict) -> LinkSettings:
        key = ("link", index)
        if not isinstance(table, dict):
            raise self.error(key, "expected a table")
        for name, value in table.items():
            if name not in LINK_KEYS:
                raise self.error(key + (name,), f"unknown key; expected one of: {', '.join(LINK_KEYS)}")
            ok, _ = _type_ok(value, LINK_KEYS[name])
            if not ok:
                raise self.error(key + (name,), f"expected {LINK_KEYS[name].__name__}, got {value!r}")
        missing = [name for name in ("from", "to") if name not in table]
        if missing:
            raise self.error(key, f"a link needs {' and '.join(repr(m) for m in missing)}")
        options = {k: v for k, v in table.items() if k not in ("from", "to")}
        link = LinkSettings(source=table["from"], target=table["to"], **options)
        if link.mode not in MODES:
            raise self.error(key + ("mode",), f"expected one of {MODES}, got {link.mode!r}")
        if link.hwm < 1:
            raise self.error(key + ("hwm",), "must be at least 1")
        return link


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


def parse(text: str, path: str = "config.toml") -> Config:
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
    if graph.runner not in RUNNERS:
        raise builder.error(("graph", "runner"), f"expected one of {RUNNERS}, got {graph.runner!r}")
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
    return Config(path=path, graph=graph, nodes=nodes, links=links)


def load(path) -> Config:
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse(text, path)
