"""Event records: the canonical camera-event layout and the registry of record dtypes.

The canonical layout is dv-processing's ``EventStore`` memory layout (``dv::Event``):
``t`` int64 microseconds at offset 0, ``x`` int16 at 8, ``y`` int16 at 10, ``p`` int8 at 12,
16 bytes per event with 3 bytes of padding. Converting from dv-processing is therefore a
zero-copy ``view`` (``sensors/dv_events.py``). Polarity is 1 for ON and 0 for OFF.

Stages that emit derived events register their own dtype under a name (``register_dtype``);
the name travels in every packet header so a receiver can rebuild the array without copying.
"""

from __future__ import annotations

import numpy as np

EVENT_DTYPE = np.dtype(
    {
        "names": ["t", "x", "y", "p"],
        "formats": ["<i8", "<i2", "<i2", "i1"],
        "offsets": [0, 8, 10, 12],
        "itemsize": 16,
    }
)

# Feature events emitted by HOTS layers and similar stages: p is a feature index, not a polarity.
FEATURE_DTYPE = np.dtype(
    {
        "names": ["t", "x", "y", "f"],
        "formats": ["<i8", "<i2", "<i2", "<i2"],
        "offsets": [0, 8, 10, 12],
        "itemsize": 16,
    }
)

# Name of the payload kind whose bytes are a UTF-8 JSON array of objects (decisions, notes).
JSON_DTYPE_NAME = "json"

_DTYPES: dict[str, np.dtype] = {"events": EVENT_DTYPE, "features": FEATURE_DTYPE}


def register_dtype(name: str, dtype: np.dtype) -> np.dtype:
    """Register a structured record dtype under ``name`` (idempotent for the same layout)."""
    dtype = np.dtype(dtype)
    if name == JSON_DTYPE_NAME:
        raise ValueError(f"dtype name {name!r} is reserved for JSON payloads")
    if dtype.names is None:
        raise ValueError(f"dtype {name!r} must be a structured dtype with named fields")
    known = _DTYPES.get(name)
    if known is not None and known != dtype:
        raise ValueError(f"dtype {name!r} is already registered with another layout: {known}")
    _DTYPES[name] = dtype
    return dtype


def dtype_by_name(name: str) -> np.dtype:
    """The registered record dtype called ``name``; KeyError names the unknown dtype."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise KeyError(f"unknown record dtype {name!r}; known: {sorted(_DTYPES)}") from None


def dtype_name(dtype: np.dtype) -> str:
    """The registered name of ``dtype``; ValueError when it was never registered."""
    for name, known in _DTYPES.items():
        if known == dtype:
            return name
    raise ValueError(f"record dtype {dtype} is not registered; call register_dtype first")


def concat_records(chunks, dtype: np.dtype = EVENT_DTYPE) -> np.ndarray:
    """Concatenate record arrays keeping ``dtype`` exactly.

    Trap: plain ``np.concatenate`` of structured arrays with padding returns a packed dtype
    (13-byte events instead of 16), which breaks the zero-copy layout; this never does.
    Padding bytes are not data: numpy copies structured arrays field by field and leaves them
    unspecified, and so does the wire format.
    """
    chunks = list(chunks)
    return np.concatenate(chunks, dtype=dtype) if chunks else np.empty(0, dtype)


def empty_events(n: int = 0) -> np.ndarray:
    """A zeroed array of ``n`` canonical events."""
    return np.zeros(n, dtype=EVENT_DTYPE)


def make_events(t, x, y, p) -> np.ndarray:
    """Canonical events from four equally long sequences (t in us, p: nonzero means ON)."""
    t = np.asarray(t)
    out = np.zeros(len(t), dtype=EVENT_DTYPE)
    out["t"] = t
    out["x"] = x
    out["y"] = y
    out["p"] = np.asarray(p) != 0
    return out


def from_structured(array: np.ndarray) -> np.ndarray:
    """Canonical events from any structured array with t/x/y/p fields (tonic, faery, expelliarmus).

    Field aliases accepted: ``ts``/``timestamp`` for t, ``polarity``/``on`` for p. Returns the
    input itself when it already has the canonical layout.
    """
    if array.dtype == EVENT_DTYPE:
        return array
    names = array.dtype.names or ()
    aliases = {"t": ("t", "ts", "timestamp"), "x": ("x",), "y": ("y",), "p": ("p", "polarity", "on")}
    picked = {}
    for field, options in aliases.items():
        found = next((name for name in options if name in names), None)
        if found is None:
            raise ValueError(f"structured array has no {field!r} field (fields: {names})")
        picked[field] = array[found]
    return make_events(picked["t"], picked["x"], picked["y"], picked["p"])
