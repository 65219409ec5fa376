"""Node types by name: what ``type = "..."`` in config.toml may say.

Each node type pairs a frozen dataclass of typed parameters with a builder. Modules in the
``pipeline.nodes`` package register their types with ``@node_type`` when imported; ``lookup``
imports them all on first use, so adding a node type means adding one module there.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, is_dataclass
from typing import Callable

SOURCE, STAGE, SINK = "source", "stage", "sink"
KINDS = (SOURCE, STAGE, SINK)


@dataclass(frozen=True)
class NodeType:
    name: str
    kind: str
    params: type
    build: Callable  # (node name, params instance) -> Source | Stage
    doc: str


_TYPES: dict[str, NodeType] = {}
_loaded = False


def node_type(name: str, kind: str, params: type):
    """Class decorator: register ``cls(name, params)`` as node type ``name`` of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if not is_dataclass(params):
        raise TypeError(f"parameters of {name!r} must be a dataclass")

    def register(cls):
        if name in _TYPES and _TYPES[name].build is not cls:
            raise ValueError(f"node type {name!r} registered twice")
        doc = (cls.__doc__ or "").strip().splitlines()
        _TYPES[name] = NodeType(name, kind, params, cls, doc[0] if doc else "")
        return cls

    return register


def _load() -> None:
    global _loaded
    if _loaded:
        return
    import pipeline.nodes as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _loaded = True


def lookup(name: str) -> NodeType:
    _load()
    try:
        return _TYPES[name]
    except KeyError:
        raise KeyError(f"unknown node type {name!r}; known: {', '.join(sorted(_TYPES))}") from None


def all_types() -> dict[str, NodeType]:
    _load()
    return dict(_TYPES)
