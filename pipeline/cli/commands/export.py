"""``evpipe export --nir MODEL OUT.nir``: a model file as a NIR graph (docs/snn.md, "NIR")."""

from __future__ import annotations

import sys

from pipeline.core.model import load_model
from pipeline.learn.nir import NIRError, write

NAME = "export"
HELP = "write an SNN model file (.npz) as a NIR graph (HDF5) for other simulators and hardware"


def add_arguments(parser) -> None:
    parser.add_argument("--nir", action="store_true",
                        help="write NIR (Input, Linear, LIF or IF, Output nodes); the only format")
    parser.add_argument("model", help="model file to read (.npz, evpipe-snn/1)")
    parser.add_argument("output", help="NIR file to write (.nir)")


def main(args) -> int:
    if not args.nir:
        print(f"evpipe {NAME}: name the format to write (--nir)", file=sys.stderr)
        return 2
    try:
        model = load_model(args.model)
        write(model, args.output)
    except NIRError as exc:
        print(f"evpipe {NAME}: {args.model}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # the model file, named in the message
        print(f"evpipe {NAME}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"evpipe {NAME}: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{model.n_layers} layer(s), {len(model.classes)} outputs -> {args.output}")
    return 0
