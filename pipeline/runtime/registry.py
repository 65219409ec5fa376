"""The node types a config may name, found by importing every module of ``pipeline/nodes/``.

Node modules declare their types with ``pipeline.core.nodetype.node_type``; ``lookup`` imports
them all on first use, so adding a node type means adding one module there.
"""

from __future__ import annotations

import importlib
import pkgutil

import pipeline.nodes as nodes_package
from pipeline.core.nodetype import DECLARED, NodeType

_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(nodes_package.__path__):
        importlib.import_module(f"{nodes_package.__name__}.{info.name}")
    _loaded = True


def lookup(name: str) -> NodeType:
    _load()
    try:
        return DECLARED[name]
    except KeyError:
        raise KeyError(f"unknown node type {name!r}; known: {', '.join(sorted(DECLARED))}") from None


def all_types() -> dict[str, NodeType]:
    _load()
    return dict(DECLARED)
