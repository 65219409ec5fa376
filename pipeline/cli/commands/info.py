"""``evpipe info FILE``: format, resolution, event count, time range, ON fraction, streams."""

from __future__ import annotations

import json
import sys

from sensors.readers import FormatError, detect_format, formats

NAME = "info"
HELP = "describe a recording: format, resolution, events, first/last time, ON fraction"


def add_reader_arguments(parser) -> None:
    """Options shared by the commands that open recordings (info, convert)."""
    parser.add_argument("--format", default="auto", help="reader format (default: detect from content)")
    parser.add_argument("--sensor", default="", help="sensor name or WxH when the file does not say")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="reader option, e.g. evt3_time=expelliarmus or columns=t,x,y,p")
    add_topic_argument(parser)


def add_topic_argument(parser) -> None:
    parser.add_argument("--topic", default="", help="rosbag2 files: the EventPacket topic to read "
                                                    "(default: the only one, else /events)")


def reader_format(args, path, required: bool = True) -> str:
    """The reader format of ``path``: ``--format``, or with ``--topic`` the format's name with the
    topic as its selector (``rosbag2:/events``). A ``--topic`` for a file whose format has no
    topics is a FormatError when ``required``, else left to the caller."""
    if not args.topic:
        return args.format
    name = detect_format(path) if args.format == "auto" else args.format
    if name in formats() and formats()[name].selector:
        return f"{name}:{args.topic}"
    if required:
        raise FormatError(path, None, f"--topic picks a topic of a rosbag2 file; this is {name}")
    return args.format


def reader_options(args) -> dict:
    """Reader keyword options from ``--sensor`` and ``-o KEY=VALUE`` (ints parsed as ints)."""
    options = {"sensor": args.sensor} if args.sensor else {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"evpipe: -o expects KEY=VALUE, got {item!r}")
        options[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value
    return options


def reader_problem(command: str, path: str, exc: FormatError | TypeError) -> int:
    """Report in one line on stderr why ``evpipe COMMAND`` could not read ``path``: a bad file
    (FormatError) or a reader option the chosen reader does not take (TypeError); returns 2."""
    problem = f"{path}: bad reader option: {exc}" if isinstance(exc, TypeError) else str(exc)
    print(f"evpipe {command}: {problem}", file=sys.stderr)
    return 2


def add_arguments(parser) -> None:
    parser.add_argument("file", help="recording to describe")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_reader_arguments(parser)


def main(args) -> int:
    from sensors.info import info

    try:
        summary = info(args.file, reader_format(args, args.file), **reader_options(args))
    except (FormatError, TypeError) as exc:
        return reader_problem(NAME, args.file, exc)
    if args.json:
        print(json.dumps(summary))
        return 0
    for key, value in summary.items():
        print(f"{key:>12}: {', '.join(value) if isinstance(value, list) else value}")
    return 0
