"""`evpipe eval --data DIR --json OUT`: stream samples through the pipeline's stages, score them."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
import tempfile

from pipeline.cli.commands.train import (
    add_parameter_arguments,
    add_split_arguments,
    parameters,
)
from pipeline.core.files import file_problem, make_parent, open_for_writing
from pipeline.core.model import load_model, read_training
from pipeline.learn import cluster
from pipeline.learn.continuous import evaluate_continuous
from pipeline.learn.evaluate import evaluate, pooled
from pipeline.learn.features import DatasetError, select
from pipeline.learn.train import train
from pipeline.ui.plots import PlotInputError, check_out
from pipeline.ui.plots import save as save_plot

NAME = "eval"
HELP = "evaluate a model on a labelled dataset: accuracy, early decisions, latency, curve"

log = logging.getLogger("evpipe")
DEFAULT_MODEL = pathlib.Path(__file__).resolve().parents[3] / "recordings" / "model.npz"
SHOWN = ("n_samples", "accuracy_final", "accuracy_ann", "accuracy_early", "early_rate",
         "median_event_fraction", "median_decision_us")
CONTINUOUS_SHOWN = ("objects", "found", "decided_once", "extra_decisions", "abstentions",
                    "accuracy_first", "accuracy_first_vs_marker", "median_delay_ms",
                    "median_event_share")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model file (default: the "
                        "shipped recordings/model.npz)")
    parser.add_argument("--data", required=True, help="dataset: a folder with one subfolder per "
                        "class, named after the class, holding its recordings")
    parser.add_argument("--json", help="write the metrics here")
    parser.add_argument("--plot", help="write the evaluation figure here (accuracy versus events seen, confusion matrix; PNG)")
    add_split_arguments(parser)
    cluster.add_arguments(parser)
    parser.add_argument("--continuous", action="store_true",
                        help="score the live read-out instead: the samples as one marker-free "
                             "stream, objects found and decided once (docs/snn.md)")
    parser.add_argument("--gap-ms", type=float, default=300.0, metavar="G",
                        help="--continuous: silence between samples, ms (default 300)")
    parser.add_argument("--noise", type=float, default=0.0, metavar="R",
                        help="--continuous: uniform background noise added, events/s (default 0)")
    parser.add_argument("--cross-validate", type=int, default=0, metavar="K",
                        help="train one model per fold of K (ignores --model) and pool the "
                             "held-out results; training flags below apply")
    add_parameter_arguments(parser)


def cross_validate(args, runner, spec, params) -> dict:
    k, runs, trained_on = args.cross_validate, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for fold in range(k):
            path = os.path.join(tmp, f"fold{fold}.npz")
            trained_on.append(train(select(args.data, k, fold, test=False, seed=args.split_seed,
                                           share=args.train_share), path, spec, params,
                                    runner)["n_samples"])
            runs.append(evaluate(path, select(args.data, k, fold, test=True, seed=args.split_seed),
                                 desc=f"fold {fold}", runner=runner))
            print(f"fold {fold}: " + _line(runs[-1].metrics), file=sys.stderr)
    return {**pooled(runs), "train_samples": trained_on, "folds": [run.metrics for run in runs]}


def _line(result: dict, keys=SHOWN) -> str:
    return ", ".join(f"{key} {result[key]:.4g}" for key in keys if result.get(key) is not None)


def continuous(args, files, runner) -> dict:
    """The live read-out on ``files`` as one stream (in this process), beside the marker mode on
    the same files (mapped over ``runner``)."""
    if not (args.gap_ms >= 0 and args.noise >= 0):  # nan fails too
        raise DatasetError(f"--gap-ms and --noise must be >= 0, got {args.gap_ms:g} and {args.noise:g}")
    result = evaluate_continuous(args.model, files, round(args.gap_ms * 1000), args.noise,
                                 args.split_seed)
    marker = evaluate(args.model, files, desc="marker mode", runner=runner).metrics
    result["marker_mode"] = {key: marker[key] for key in (
        "accuracy_early", "accuracy_final", "median_event_fraction", "median_decision_us")}
    result["accuracy_first_vs_marker"] = (result["accuracy_first"] / marker["accuracy_early"]
                                          if marker["accuracy_early"] else None)
    return result


def _model_problem(path) -> str:
    """Why ``path`` is not a trained model file, or "" when it is one."""
    try:
        load_model(path)
        read_training(path)
    except ValueError as exc:
        return str(exc)
    return ""


def main(args) -> int:
    try:  # the outputs first: an evaluation can take hours
        if args.plot:
            check_out(args.plot)
        if args.json:
            make_parent(args.json)
    except (PlotInputError, OSError) as exc:
        log.error("%s", exc if isinstance(exc, PlotInputError) else
                  f"{args.json}: cannot write ({file_problem(exc)})")
        return 2
    try:
        cluster.parse_scheduler(args.scheduler)
        if args.cross_validate < 0 or args.cross_validate == 1:
            log.error("--cross-validate K needs K >= 2 folds (0: no cross-validation), got %d",
                      args.cross_validate)
            return 2
        if args.train_share != 1 and not args.cross_validate:
            log.error("--train-share picks training files: it applies to --cross-validate only")
            return 2
        if args.cross_validate:
            try:
                spec, params = parameters(args)
            except ValueError as exc:  # a training flag out of range, named in the message
                log.error("%s", exc)
                return 2
            with cluster.connect(args.scheduler, args.scheduler_timeout) as runner:
                result = cross_validate(args, runner, spec, params)
        else:
            problem = _model_problem(args.model)
            if problem:
                log.error("%s", problem)
                return 2
            files = select(args.data, args.folds, args.fold, test=True, seed=args.split_seed)
            with cluster.connect(args.scheduler, args.scheduler_timeout) as runner:
                result = (continuous(args, files, runner) if args.continuous else
                          evaluate(args.model, files, runner=runner).metrics)
    except (DatasetError, cluster.SchedulerError) as exc:
        log.error("%s", exc)
        return 2
    print(_line(result, CONTINUOUS_SHOWN if args.continuous else SHOWN))
    if args.json:
        with open_for_writing(args.json) as handle:
            handle.write(json.dumps(result, indent=1) + "\n")
    if args.plot and not args.continuous:
        save_plot(result, args.plot)
    elif args.plot:
        log.warning("--plot draws the marker-mode evaluation; not written with --continuous")
    return 0
