"""Plots of evaluation results: accuracy versus events seen, confusion matrix, decision times.

Input: the evaluation JSON of ``evpipe eval`` (``pipeline.learn.evaluate.metrics``). Keys read here:

- ``curve``: ``{"fraction": [f0, f1, ...], SERIES: [accuracy at f0, ...], ...}``: every other key
  whose value is a list as long as ``fraction`` is drawn as one line (the evaluation writes
  ``snn``, ``ann``, ``early_decided``, ``early_right``; a plain ``accuracy`` works too). Fractions
  and accuracies are shares in [0, 1].
- ``confusion``: square list of lists, counts[true class][decided class].
- optional: ``classes`` (class names, in confusion order), ``n_samples``, ``accuracy_final``,
  ``accuracy_early``, ``accuracy_ann`` (shown in titles), ``median_decision_us`` (marked on the
  histogram) and ``decisions``.
- decisions for the histogram: a ``decisions`` list in the JSON, or a separate JSON-lines file
  of decision records (the ``jsonl`` sink's output); each needs ``t`` and ``t_start`` (us).
  Without decisions the histogram panel is left out.
"""

from __future__ import annotations

import json
import os

import numpy as np

from pipeline.core.files import file_problem, make_parent

SERIES_NAMES = {"snn": "SNN spike-count leader", "ann": "ANN on the prefix",
                "early_right": "early decision made and right", "early_decided": "early decision made"}


class PlotInputError(ValueError):
    """An evaluation or decisions file that lacks what a plot needs; names the file and key."""


def _read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except OSError as exc:
        raise PlotInputError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise PlotInputError(f"{path}: not JSON ({exc})") from None


def load_eval(path) -> dict:
    """The evaluation JSON at ``path``, checked for the keys above."""
    result = _read_json(path)
    if not isinstance(result, dict):
        raise PlotInputError(f"{path}: expected a JSON object")
    curve = result.get("curve")
    if not isinstance(curve, dict) or not isinstance(curve.get("fraction"), list):
        raise PlotInputError(f"{path}: key 'curve' must be an object with a 'fraction' list")
    if not curve_series(curve):
        raise PlotInputError(f"{path}: 'curve' has no accuracy list as long as 'fraction'")
    confusion = result.get("confusion")
    if not isinstance(confusion, list) or not confusion or any(
            not isinstance(row, list) or len(row) != len(confusion) for row in confusion):
        raise PlotInputError(f"{path}: key 'confusion' must be a square list of lists of counts")
    classes = result.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) != len(confusion)):
        raise PlotInputError(f"{path}: 'classes' must list {len(confusion)} names")
    if "decisions" in result:
        check_decisions(path, result["decisions"])
    return result


def check_decisions(path, decisions) -> list[dict]:
    if not isinstance(decisions, list):
        raise PlotInputError(f"{path}: decisions must be a list of decision records")
    for i, record in enumerate(decisions):
        if not isinstance(record, dict) or not all(isinstance(record.get(k), int) for k in ("t", "t_start")):
            raise PlotInputError(f"{path}: decision {i} lacks integer 't' and 't_start' (us)")
    return decisions


def load_decisions(path) -> list[dict]:
    """Decision records from a JSON-lines file (one object per line) or a JSON list."""
    if not path.endswith(".jsonl"):
        return check_decisions(path, _read_json(path))
    records = []
    try:
        with open(path) as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except ValueError as exc:
                        raise PlotInputError(f"{path}:{number}: not JSON ({exc})") from None
    except OSError as exc:
        raise PlotInputError(f"{path}: cannot read ({exc.strerror})") from None
    return check_decisions(path, records)


def curve_series(curve: dict) -> dict[str, list]:
    n = len(curve["fraction"])
    return {k: v for k, v in curve.items() if k != "fraction" and isinstance(v, list) and len(v) == n}


def accuracy_curve(ax, result: dict) -> None:
    curve = result["curve"]
    for key, values in curve_series(curve).items():
        ax.plot(curve["fraction"], values, ":" if key == "early_decided" else "-",
                label=SERIES_NAMES.get(key, key))
    ax.set_xlabel("fraction of the sample's events seen")
    ax.set_ylabel("share of samples")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    scores = [f"{name} {result[key]:.3f}" for key, name in
              (("accuracy_final", "final"), ("accuracy_early", "early"), ("accuracy_ann", "ANN"))
              if isinstance(result.get(key), (int, float))]
    ax.set_title("accuracy vs events seen" + (f"\n{', '.join(scores)}" if scores else ""), fontsize=10)


def confusion_matrix(ax, result: dict) -> None:
    counts = np.asarray(result["confusion"])
    names = result.get("classes") or [str(i) for i in range(len(counts))]
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("decided class")
    ax.set_ylabel("true class")
    high = counts.max() if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                color="white" if value > high / 2 else "black")
    ax.set_title(f"confusion ({int(counts.sum())} samples)", fontsize=10)


def decision_times(ax, decisions: list[dict], median_us: float | None = None) -> None:
    times_ms = np.array([d["t"] - d["t_start"] for d in decisions], np.float64) / 1e3
    ax.hist(times_ms, bins=min(30, max(5, len(times_ms) // 5)), color="#4a90d9")
    if median_us is not None:
        ax.axvline(median_us / 1e3, color="black", linestyle="--", label=f"median {median_us / 1e3:.1f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("decision time after segment start (ms, sensor time)")
    ax.set_ylabel("decisions")
    ax.set_title(f"decision times ({len(times_ms)} decisions)", fontsize=10)


def figure(result: dict, decisions: list[dict] | None = None):
    """A figure with the accuracy curve, the confusion matrix and, given decisions, their times."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    decisions = decisions if decisions is not None else result.get("decisions")
    panels = 3 if decisions else 2
    fig = Figure(figsize=(5 * panels, 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    accuracy_curve(axes[0], result)
    confusion_matrix(axes[1], result)
    if decisions:
        median = result.get("median_decision_us")
        decision_times(axes[2], decisions, median if isinstance(median, (int, float)) else None)
    fig.tight_layout()
    return fig


def check_out(out) -> str:
    """``out`` with its folder made; PlotInputError naming it when matplotlib cannot write its
    suffix or the folder cannot be made (checked before an evaluation, not after it)."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = os.path.splitext(out)[1].lstrip(".").lower()
    supported = FigureCanvasBase.get_supported_filetypes()
    if suffix not in supported:
        raise PlotInputError(f"{out}: cannot write {suffix or 'a file without a suffix'!r}; use "
                             f"one of {', '.join(sorted(supported))}")
    try:
        return make_parent(out)
    except OSError as exc:
        raise PlotInputError(f"{out}: cannot write ({file_problem(exc)})") from None


def save(result: dict, out, decisions: list[dict] | None = None) -> None:
    fig = figure(result, decisions)
    try:
        fig.savefig(check_out(out), dpi=110)
    except OSError as exc:  # a folder of that name, a full disk
        raise PlotInputError(f"{out}: cannot write ({exc.strerror})") from None
