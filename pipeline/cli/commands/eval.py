"""`evpipe eval --data DIR --json OUT`: stream samples through the pipeline's stages, score them."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile

from pipeline.cli.commands.train import (
    add_parameter_arguments,
    add_split_arguments,
    parameters,
)

NAME = "eval"
HELP = "evaluate a model on a labelled dataset: accuracy, early decisions, latency, curve"

DEFAULT_MODEL = pathlib.Path(__file__).resolve().parents[2] / "recordings" / "model.npz"
SHOWN = ("n_samples", "accuracy_final", "accuracy_ann", "accuracy_early", "early_rate",
         "median_event_fraction", "median_decision_us")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model file (default: the "
                        "shipped recordings/model.npz)")
    parser.add_argument("--data", required=True, help="folder with one subfolder per class")
    parser.add_argument("--json", help="write the metrics here")
    parser.add_argument("--plot", help="write the evaluation figure here (accuracy versus events seen, confusion matrix; PNG)")
    add_split_arguments(parser)
    parser.add_argument("--cross-validate", type=int, default=0, metavar="K",
                        help="train one model per fold of K (ignores --model) and pool the "
                             "held-out results; training flags below apply")
    add_parameter_arguments(parser)


def cross_validate(args) -> dict:
    from pipeline.learn.evaluate import evaluate, pooled
    from pipeline.learn.features import select
    from pipeline.learn.train import train

    spec, params = parameters(args)
    k, runs = args.cross_validate, []
    with tempfile.TemporaryDirectory() as tmp:
        for fold in range(k):
            path = os.path.join(tmp, f"fold{fold}.npz")
            train(select(args.data, k, fold, test=False, seed=args.split_seed), path, spec, params)
            runs.append(evaluate(path, select(args.data, k, fold, test=True, seed=args.split_seed),
                                 desc=f"fold {fold}"))
            print(f"fold {fold}: " + _line(runs[-1].metrics), file=sys.stderr)
    return {**pooled(runs), "folds": [run.metrics for run in runs]}


def _line(result: dict) -> str:
    return ", ".join(f"{key} {result[key]:.4g}" for key in SHOWN)


def main(args) -> int:
    from pipeline.learn.evaluate import evaluate
    from pipeline.ui.plots import save as save_plot
    from pipeline.learn.features import select

    if args.cross_validate:
        result = cross_validate(args)
    else:
        files = select(args.data, args.folds, args.fold, test=True, seed=args.split_seed)
        result = evaluate(args.model, files).metrics
    print(_line(result))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        save_plot(result, args.plot)
    return 0
