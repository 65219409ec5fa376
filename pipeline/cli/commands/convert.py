"""``evpipe convert IN OUT``: any readable recording to AEDAT4, .npz, CSV or AEDAT 3.1."""

from __future__ import annotations

import sys

from pipeline.cli.commands.info import add_reader_arguments, reader_options, reader_problem
from sensors.readers import FormatError

NAME = "convert"
HELP = "convert a recording; the output format follows OUT's suffix (.aedat4, .npz, .csv, .aedat)"


def add_arguments(parser) -> None:
    parser.add_argument("input", help="recording to read (format detected from its content)")
    parser.add_argument("output", help="file to write (its folder is created if missing)")
    add_reader_arguments(parser)


def main(args) -> int:
    from sensors.writers import convert

    try:
        done = convert(args.input, args.output, args.format, **reader_options(args))
    except (FormatError, TypeError) as exc:
        return reader_problem(NAME, args.input, exc)
    except OSError as exc:  # the output (or its folder) cannot be created or written
        print(f"evpipe convert: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    print(f"{done['events']} events {done['width']}x{done['height']} ({done['format']}) -> {done['to']}")
    return 0
