"""Node-type declarations: what ``type = "..."`` in config.toml may say, and with which parameters.

Each node type pairs a frozen dataclass of typed parameters (a ``Params`` subclass) with a builder
(the node class). The parameter class also says which record kinds (packet dtype names:
``"events"``, ``"features"``, ``"spikes"``, ``"json"`` for decision records, ...) the node takes
and emits, possibly depending on the parameters, so the config loader can reject a link whose
records the receiving node cannot use. Modules of
``pipeline/nodes/`` declare their types with ``@node_type`` when imported; the runtime's registry
(``pipeline/runtime/registry.py``) imports them all and looks them up. Declaring lives here, below
both, so node modules never import the runtime.

Parameters are declared with ``param``: default, help text, unit and valid range travel with the
field, so the config loader checks them and ``evpipe nodes TYPE`` documents them from one place.
A value outside its range, or outside a ``Literal[...]`` set, raises ``ParamError`` naming the
parameter when the dataclass is constructed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
import re
import types
import typing
from dataclasses import dataclass, field, is_dataclass
from typing import Callable, ClassVar, Literal

from pipeline.core.events import JSON_DTYPE_NAME
from pipeline.core.model import load_model

SOURCE, STAGE, SINK = "source", "stage", "sink"
KINDS = (SOURCE, STAGE, SINK)

# Record kinds: packet dtype names, those of ``pipeline.core.events`` here; node modules that
# register a dtype name their own ("surface", "spikes", ...).
EVENTS, FEATURES, JSON = "events", "features", JSON_DTYPE_NAME

# Record kinds beyond packet dtype names: ``ANY`` (accepts: every kind, JSON included),
# ``ARRAYS`` (accepts: every structured record array, not JSON) and ``SAME`` (emits: whatever
# the node's inputs emit).
ANY, ARRAYS, SAME = "anything", "any record array", "the same as its inputs"

_BOUNDS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


class ParamError(ValueError):
    """A parameter value that cannot work; ``key`` names the parameter so the config loader
    can point at its line."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def param(default=dataclasses.MISSING, help: str = "", *, unit: str = "", gt=None, ge=None,
          lt=None, le=None, path: bool = False, required: bool = False,
          default_factory=dataclasses.MISSING, aliases: tuple[str, ...] = ()):
    """A dataclass field of a ``Params`` class with its documentation and valid range.

    ``help``: what the parameter means (shown by ``evpipe nodes TYPE``); ``unit``: e.g. "us",
    "px", "events/s"; ``gt``, ``ge``, ``lt``, ``le``: bounds of a numeric value (>, >=, <, <=);
    ``path``: a file path, resolved against the config file's folder when relative;
    ``required``: the value must not be empty; ``aliases``: deprecated names still accepted in
    config files (with a warning).
    """
    bounds = tuple((op, bound) for op, bound in ((">", gt), (">=", ge), ("<", lt), ("<=", le))
                   if bound is not None)
    metadata = {"help": help, "unit": unit, "bounds": bounds, "path": path, "required": required,
                "aliases": aliases}
    return field(default=default, default_factory=default_factory, metadata=metadata)


def path_field(default: str | None = "", help: str = "", required: bool = False):
    """A dataclass field holding a file path; relative paths resolve against the config's folder."""
    return param(default, help, path=True, required=required)


def is_path_field(f) -> bool:
    """Whether dataclass field ``f`` holds a file path (``path_field`` or ``param(path=True)``)."""
    return bool(f.metadata.get("path"))


def describe_type(annotation) -> str:
    """A parameter type as users read it: ``int``, ``str | None``, ``one of 'a', 'b'``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe_type(option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is list:
        (item,) = typing.get_args(annotation) or (object,)
        return f"list[{describe_type(item)}]"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def literal_ok(value, annotation) -> bool:
    """Whether ``value`` is one of the values of ``Literal`` ``annotation`` (``True`` is not 1)."""
    return any(type(value) is type(allowed) and value == allowed
               for allowed in typing.get_args(annotation))


def describe_bounds(f) -> str:
    """The declared range of field ``f``, e.g. ``>= 0 and <= 100``; empty when unbounded."""
    return " and ".join(f"{op} {bound:g}" if isinstance(bound, float) else f"{op} {bound}"
                        for op, bound in f.metadata.get("bounds", ()))


@functools.cache
def type_hints(cls) -> dict:
    """Resolved annotations of dataclass ``cls`` (cached: the classes never change)."""
    return typing.get_type_hints(cls)


def check_fields(params) -> None:
    """Check every required field, ``Literal`` value and declared range; ParamError otherwise."""
    hints = type_hints(type(params))
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        hint = hints[f.name]
        if f.metadata.get("required") and not value:
            raise ParamError(f.name, f"required: {f.metadata['help']}")
        if typing.get_origin(hint) is Literal and not literal_ok(value, hint):
            raise ParamError(f.name, f"expected {describe_type(hint)}, got {value!r}")
        bounds = f.metadata.get("bounds", ())
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not all(_BOUNDS[op](value, bound) for op, bound in bounds):
            kind = "an integer" if hint is int else "a number"
            raise ParamError(f.name, f"expected {kind} {describe_bounds(f)}, got {value:g}")


def check_size(params, otherwise: str) -> None:
    """ParamError unless ``params.width`` and ``params.height`` (px) are both given (> 0) or
    both 0, in which case the size comes from ``otherwise`` (e.g. "the file")."""
    if (params.width > 0) != (params.height > 0):
        raise ParamError("height" if params.width else "width",
                         f"give width and height together, or neither (size from {otherwise})")


@dataclass(frozen=True)
class Params:
    """Base of every parameter dataclass: ranges and ``Literal`` values are checked on
    construction, then ``check`` (cross-field rules); ``check_files`` is for the config loader.

    ``accepts`` and ``emits`` declare the record kinds the node takes and emits (dtype names, or
    ``ANY``, ``ARRAYS``, ``SAME``); ``accepted`` and ``emitted`` narrow them for these values.
    """

    accepts: ClassVar[tuple[str, ...]] = ()
    emits: ClassVar[tuple[str, ...] | str] = ()

    def __post_init__(self):
        check_fields(self)
        self.check()

    def check(self) -> None:
        """Rules between parameters (no I/O); raise ParamError naming the parameter to fix."""

    def check_files(self) -> None:
        """Checks that read files named by parameters (model, prototypes); the config loader
        calls this so a wrong file is a config error, not a failure once the graph runs."""

    def accepted(self) -> tuple[str, ...]:
        """The record kinds the node takes with these values (default: ``accepts``)."""
        return self.accepts

    def emitted(self) -> tuple[str, ...] | str:
        """The record kinds the node emits with these values, or ``SAME`` (default: ``emits``)."""
        return self.emits

    def output_size(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        """The sensor size (width, height; px) of the packets the node emits when those it
        receives have ``size`` (None: known only once the graph runs); ParamError naming the
        parameter when ``size`` cannot work. Default: a source with ``width`` and ``height``
        parameters (> 0) emits that size, another source a size known only at run time; a stage
        emits the size it receives."""
        if self.accepts:
            return size
        width, height = getattr(self, "width", 0), getattr(self, "height", 0)
        return (width, height) if width > 0 and height > 0 else None

    def input_size(self) -> tuple[int, int] | None:
        """The sensor size (width, height; px) the node needs its input packets to have, or None
        when any size works. Default: the size of the SNN model file named by a ``model``
        parameter when the node takes the records that model takes (the snn stage), else None."""
        path = getattr(self, "model", None)
        if not path:
            return None
        model = load_model(path)
        return (model.width, model.height) if model.input in self.accepted() else None


# Automatic placement (pipeline/runtime/placement.py) balances workers by the cost of one packet
# through each node type: us per 1 ms packet of N-MNIST samples emitted by the default graph's
# replay (`python -m bench.bench_graph costs CONFIG` measures them), this value for types not
# measured there.
DEFAULT_WEIGHT_US = 5.0


@dataclass(frozen=True)
class NodeType:
    name: str
    kind: str
    params: type
    build: Callable  # (node name, params instance) -> Source | Stage
    doc: str  # one-line summary: the first sentence of the node class's docstring
    weight: float = DEFAULT_WEIGHT_US  # cost of one packet, us: how automatic placement balances


def takes(accepted: tuple[str, ...], kind: str) -> bool:
    """Whether a node accepting ``accepted`` can use records of ``kind``."""
    return kind in accepted or ANY in accepted or (ARRAYS in accepted and kind != JSON)


def describe_records(records: tuple[str, ...] | str) -> str:
    """Record kinds as users read them: ``events, features``, ``decisions (json)``..."""
    if isinstance(records, str):
        return records
    names = [f"decisions ({name})" if name == JSON else name for name in records]
    return ", ".join(names) or "nothing"


DECLARED: dict[str, NodeType] = {}


def summary(cls) -> str:
    """The first sentence of ``cls``'s docstring, on one line."""
    paragraph = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]


def node_type(name: str, kind: str, params: type, weight: float = DEFAULT_WEIGHT_US):
    """Class decorator: declare ``cls(name, params)`` as node type ``name`` of ``kind``;
    ``weight``: the cost of one packet through it (us, see ``DEFAULT_WEIGHT_US``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if not (is_dataclass(params) and issubclass(params, Params)):
        raise TypeError(f"parameters of {name!r} must be a dataclass derived from Params")
    if (kind == SOURCE) != (not params.accepts) or (kind == SINK) != (not params.emits):
        raise ValueError(f"{name!r}: the records {params.__name__} accepts and emits do not fit a "
                         f"{kind} (sources accept nothing, sinks emit nothing, stages do both)")

    def register(cls):
        if name in DECLARED and DECLARED[name].build is not cls:
            raise ValueError(f"node type {name!r} registered twice")
        DECLARED[name] = NodeType(name, kind, params, cls, summary(cls), weight)
        return cls

    return register
