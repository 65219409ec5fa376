"""`evpipe train --data DIR --out MODEL [--method NAME]`: features, a training method
(``pipeline.learn.methods``), one model file."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys

from kernels.hots import MODES
from pipeline.core.files import file_problem, make_parent
from pipeline.learn import cluster
from pipeline.learn.classifier import CLASSIFIERS, TrainParams
from pipeline.learn.features import DatasetError, FeatureSpec, select
from pipeline.learn.methods import METHODS
from pipeline.learn.train import train

NAME = "train"
HELP = ("train an SNN on time-surface features of an N-MNIST-style dataset with one of the "
        "methods of --method (default conversion)")

log = logging.getLogger("evpipe")
# parameters with a fixed set of values
CHOICES = {"method": tuple(METHODS), "classifier": CLASSIFIERS, "mode": tuple(MODES)}


def add_parameter_arguments(parser) -> None:
    """One --flag per field of FeatureSpec and TrainParams (defaults shown in --help)."""
    for cls in (FeatureSpec, TrainParams):
        group = parser.add_argument_group(cls.__name__)
        for f in dataclasses.fields(cls):
            group.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default),
                               default=f.default, choices=CHOICES.get(f.name),
                               help=f"default {f.default}")


def parameters(args) -> tuple[FeatureSpec, TrainParams]:
    return tuple(cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
                 for cls in (FeatureSpec, TrainParams))


def add_split_arguments(parser) -> None:
    parser.add_argument("--folds", type=int, default=0,
                        help="split DATA into this many stratified, seeded folds (0: use it all)")
    parser.add_argument("--fold", type=int, default=0, help="the held-out fold")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the fold assignment")
    parser.add_argument("--train-share", type=float, default=1.0, metavar="S",
                        help="train on this share (0 < S <= 1) of each class's training files, "
                             "seeded by --split-seed, for a learning curve (default 1: all)")


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="dataset: a folder with one subfolder per "
                        "class, named after the class, holding its recordings")
    parser.add_argument("--out", required=True, help="model file to write (.npz)")
    add_split_arguments(parser)
    cluster.add_arguments(parser)
    add_parameter_arguments(parser)


def main(args) -> int:
    try:
        spec, params = parameters(args)
    except ValueError as exc:  # a parameter out of range, named in the message
        log.error("%s", exc)
        return 2
    if os.path.isdir(args.out):  # found before the training, not after it
        log.error("%s: is a folder; --out names the model file to write", args.out)
        return 2
    try:
        make_parent(args.out)
    except OSError as exc:
        log.error("%s: cannot write (%s)", args.out, file_problem(exc))
        return 2
    try:
        cluster.parse_scheduler(args.scheduler)
        files = select(args.data, args.folds, args.fold, test=False, seed=args.split_seed,
                       share=args.train_share)
        with cluster.connect(args.scheduler, args.scheduler_timeout) as runner:
            training = train(files, args.out, spec, params, runner)
    except (DatasetError, cluster.SchedulerError) as exc:
        log.error("%s", exc)
        return 2
    print(f"trained on {training['n_samples']} samples in {training['seconds']} s: training "
          f"accuracy {training['train_accuracy_ann']:.4f}, decoder k = "
          f"{training['decoder']['k']} -> {args.out}", file=sys.stderr)
    return 0
