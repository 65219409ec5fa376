"""`evpipe plot EVAL.json [--decisions D.jsonl] [-o out.png]`: plots of an evaluation's results."""

from __future__ import annotations

import logging
import os

from pipeline.ui.plots import PlotInputError, load_decisions, load_eval, save

NAME = "plot"
HELP = "plot an evaluation JSON: accuracy vs events seen, confusion matrix, decision-time histogram"

log = logging.getLogger("evpipe")


def add_arguments(parser) -> None:
    parser.add_argument("eval", help="evaluation JSON (evpipe eval); keys: docs/viewer.md, pipeline/ui/plots.py")
    parser.add_argument("--decisions", default="",
                        help="decision records for the histogram (.jsonl from the jsonl sink, or a JSON list)")
    parser.add_argument("-o", "--out", default="", help="image to write (default: EVAL with .png)")


def main(args) -> int:
    out = args.out or os.path.splitext(args.eval)[0] + ".png"
    try:
        result = load_eval(args.eval)
        decisions = load_decisions(args.decisions) if args.decisions else None
        save(result, out, decisions)
    except PlotInputError as exc:
        log.error("%s", exc)
        return 2
    print(f"wrote {out}")
    return 0
