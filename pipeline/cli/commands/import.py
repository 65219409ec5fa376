"""``evpipe import IN.nir --out MODEL.npz``: a NIR graph made by snnTorch, Norse, Sinabs, Rockpool
or ``evpipe export`` as a model of the exact core (docs/snn.md, "NIR")."""

from __future__ import annotations

import sys

from pipeline.core.model import INPUT_KINDS
from pipeline.learn.nir import DT_S, MAPPING_KEYS, NIRError, read

NAME = "import"
HELP = "read a NIR graph (Linear/Affine and LIF/IF/CubaLIF layers) into an SNN model file (.npz)"


def add_arguments(parser) -> None:
    parser.add_argument("input", help="NIR file to read (.nir, HDF5)")
    parser.add_argument("--out", required=True, help="model file to write (.npz)")
    parser.add_argument("--dt-s", type=float, default=DT_S,
                        help=f"clock step (s) the exporter assumed; snnTorch: {DT_S} (default)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="real duration of one clock step over --dt-s (a snnTorch network "
                             "run at 1 ms steps: 10); multiplies every time constant")
    parser.add_argument("--reset", choices=("zero", "subtract"),
                        help="reset of every layer (default: the nodes' metadata, else zero)")
    parser.add_argument("--classes", help="comma-separated output class names "
                                          "(default: the graph's metadata, else 0, 1, ...)")
    group = parser.add_argument_group("input mapping (default: the graph's metadata, else a "
                                      "(C, H, W) input's shape, else N-MNIST raw events 34x34x2)")
    group.add_argument("--input-kind", dest="input_kind", choices=INPUT_KINDS)
    for key in MAPPING_KEYS[1:]:
        group.add_argument(f"--{key}", type=int)


def main(args) -> int:
    given = {"input": args.input_kind, **{k: getattr(args, k) for k in MAPPING_KEYS[1:]}}
    mapping = None
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        if missing:
            print(f"evpipe {NAME}: an input mapping needs all of --input-kind, --width, "
                  f"--height, --cell, --channels (missing: {', '.join(missing)})", file=sys.stderr)
            return 2
        mapping = given
    classes = args.classes.split(",") if args.classes else None
    try:
        model = read(args.input, dt_s=args.dt_s, time_scale=args.time_scale, reset=args.reset,
                     classes=classes, mapping=mapping)
        model.save(args.out)
    except NIRError as exc:
        print(f"evpipe {NAME}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"evpipe {NAME}: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    taus = ", ".join("inf" if t == float("inf") else f"{t:g}" for t in model.taus_us)
    print(f"{model.n_layers} layer(s), tau_us {taus}, {len(model.classes)} outputs -> {args.out}")
    return 0
