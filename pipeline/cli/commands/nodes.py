"""``evpipe nodes [TYPE]``: the node types a config may name, and the parameters of one.

Everything printed comes from the node-type declarations (``pipeline.core.nodetype``): the node
class's first docstring line, the parameter dataclass's docstring, each field's type, default and
``param`` metadata (help, unit, range, deprecated names), and the record kinds taken and emitted,
so this listing cannot drift from what the config loader checks.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import textwrap

from pipeline.core.nodetype import (
    KINDS,
    NodeType,
    describe_bounds,
    describe_records,
    describe_type,
    type_hints,
)
from pipeline.runtime.registry import all_types, lookup

NAME = "nodes"
HELP = "list the node types a config may name, or describe one type's parameters"

WIDTH = 96  # wrap help text to this many columns


def add_arguments(parser) -> None:
    parser.add_argument("type", nargs="?", help="node type to describe (e.g. hots)")


def listing(types: dict[str, NodeType]) -> str:
    """One line per node type: kind, name, summary; sources first, then stages, then sinks."""
    width = max(len(name) for name in types)
    ordered = sorted(types.values(), key=lambda t: (KINDS.index(t.kind), t.name))
    return "\n".join(f"{t.kind:<6}  {t.name:<{width}}  {t.doc}" for t in ordered)


def _default(f) -> str:
    if f.metadata.get("required"):
        return "required"
    if f.default_factory is not dataclasses.MISSING:
        return f"default {f.default_factory()!r}"
    return f"default {f.default!r}"


def parameter(f, annotation) -> str:
    """The description of one parameter: a heading line, then its help, indented."""
    meta = f.metadata
    facts = [describe_type(annotation) + (f" {describe_bounds(f)}" if describe_bounds(f) else "")]
    if meta.get("unit"):
        facts.append(meta["unit"])
    if meta.get("path"):
        facts.append("file path, relative to the config file")
    facts.append(_default(f))
    text = meta.get("help", "")
    if meta.get("aliases"):
        text += f" (deprecated name: {', '.join(meta['aliases'])})"
    body = textwrap.fill(text, WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return f"  {f.name}: {'; '.join(facts)}\n{body}" if text else f"  {f.name}: {'; '.join(facts)}"


def description(node: NodeType) -> str:
    """gst-inspect style page of one node type."""
    params = node.params
    lines = [f"{node.name} ({node.kind})", f"  {node.doc}", ""]
    about = inspect.getdoc(params) or ""
    lines += [textwrap.indent(about, "  "), ""] if about else []
    if params.accepts:
        lines.append(f"Takes: {describe_records(params.accepts)}")
    if params.emits:
        lines.append(f"Emits: {describe_records(params.emits)}")
    fields = dataclasses.fields(params)
    hints = type_hints(params)
    lines += ["", "Parameters:" if fields else "Parameters: none"]
    lines += [parameter(f, hints[f.name]) for f in fields]
    return "\n".join(lines)


def main(args) -> int:
    if args.type is None:
        print(listing(all_types()))
        return 0
    try:
        node = lookup(args.type)
    except KeyError as exc:
        print(f"evpipe nodes: {exc.args[0]}", file=sys.stderr)
        return 2
    print(description(node))
    return 0
