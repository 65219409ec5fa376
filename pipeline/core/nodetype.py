"""Node-type declarations: what ``type = "..."`` in config.toml may say.

Each node type pairs a frozen dataclass of typed parameters with a builder (the node class).
Modules of ``pipeline/nodes/`` declare their types with ``@node_type`` when imported; the
runtime's registry (``pipeline/runtime/registry.py``) imports them all and looks them up.
Declaring lives here, below both, so node modules never import the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass
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


DECLARED: dict[str, NodeType] = {}


def node_type(name: str, kind: str, params: type):
    """Class decorator: declare ``cls(name, params)`` as node type ``name`` of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if not is_dataclass(params):
        raise TypeError(f"parameters of {name!r} must be a dataclass")

    def register(cls):
        if name in DECLARED and DECLARED[name].build is not cls:
            raise ValueError(f"node type {name!r} registered twice")
        doc = (cls.__doc__ or "").strip().splitlines()
        DECLARED[name] = NodeType(name, kind, params, cls, doc[0] if doc else "")
        return cls

    return register


def path_field(default: str = "", **kwargs):
    """A dataclass field holding a file path; relative paths resolve against the config's folder."""
    return field(default=default, metadata={"path": True}, **kwargs)


def is_path_field(f) -> bool:
    """Whether dataclass field ``f`` was declared with ``path_field``."""
    return bool(f.metadata.get("path"))
