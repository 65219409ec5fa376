"""``evpipe info FILE``: format, resolution, event count, time range, ON fraction, streams; for a
folder of recordings, the same for each, mapped over ``--scheduler`` (docs/cluster.md)."""

from __future__ import annotations

import functools
import json
import os
import sys

from pipeline.learn import cluster
from sensors.readers import FormatError, detect_format, formats, open_reader

NAME = "info"
HELP = ("describe a recording, or each of a folder of recordings: format, resolution, events, "
        "first/last time, ON fraction")

# what reading one file fails with: a bad file, or a reader option its reader does not take
READ_ERRORS = (FormatError, TypeError)


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


def file_format(path, format: str = "auto", topic: str = "", required: bool = True) -> str:
    """The reader format of ``path``: ``format``, or with ``topic`` the format's name with the
    topic as its selector (``rosbag2:/events``). A ``topic`` for a file whose format has no
    topics is a FormatError when ``required``, else left to the caller."""
    if not topic:
        return format
    name = detect_format(path) if format == "auto" else format
    if name in formats() and formats()[name].selector:
        return f"{name}:{topic}"
    if required:
        raise FormatError(path, None, f"--topic picks a topic of a rosbag2 file; this is {name}")
    return format


def reader_format(args, path, required: bool = True) -> str:
    """``file_format`` of ``path`` with the command's ``--format`` and ``--topic``."""
    return file_format(path, args.format, args.topic, required)


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


def folder_recordings(path) -> list[str] | None:
    """The absolute paths of the recordings in the folder ``path`` (``sensors.replay``'s dataset
    layout: files, or one subfolder of files per class), or None when ``path`` is not a folder or
    is a recording itself (a rosbag2 bag folder). FormatError when the folder holds none."""
    if not os.path.isdir(path):
        return None
    try:
        detect_format(path)
        return None
    except FormatError:
        pass
    from sensors.replay import dataset_files

    return [item.path for item in dataset_files(os.path.abspath(path))]


def options_refused(command: str, args, path, required: bool = True) -> bool:
    """Whether the reader of ``path`` refuses the reader options (reported in one line): tried
    here on a folder's first file, before mapping, rather than failing every file alike. A
    damaged file is not refused here: the map reports it with the others."""
    try:
        open_reader(path, reader_format(args, path, required), **reader_options(args))
    except TypeError as exc:
        reader_problem(command, path, exc)
        return True
    except FormatError:
        pass
    return False


def map_recordings(command: str, args, function, paths: list[str],
                   errors=READ_ERRORS) -> cluster.Mapped | None:
    """``function(path)`` for every path on ``--scheduler`` (``cluster.map_files``): a file that
    raises one of ``errors`` is logged once, naming it, and the others go on. None, after a line
    on stderr, when the scheduler is refused."""
    try:
        return cluster.map_files(function, paths, args.scheduler, command, errors,
                                 args.scheduler_timeout)
    except cluster.SchedulerError as exc:
        print(f"evpipe {command}: {exc}", file=sys.stderr)
        return None


def describe(format: str, topic: str, options: dict, path) -> dict:
    """``sensors.info.info`` of ``path`` with the reader format that ``format`` and ``topic``
    give it and the reader ``options``; what a worker runs for each file of a folder."""
    from sensors.info import info

    return info(path, file_format(path, format, topic), **options)


def add_arguments(parser) -> None:
    parser.add_argument("file", help="recording to describe, or a folder of recordings (files, or "
                                     "one subfolder per class): each is described in turn")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (a folder: one line per recording)")
    add_reader_arguments(parser)
    cluster.add_arguments(parser)
    parser.epilog = ("With a folder, --scheduler spreads its recordings over the workers, which "
                     "read them themselves: the folder must be visible to every worker at the "
                     "same path. A single file is always read in this process.")


def show(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    for key, value in summary.items():
        print(f"{key:>12}: {', '.join(value) if isinstance(value, list) else value}")


def main(args) -> int:
    """A folder: its recordings described on ``--scheduler``, in path order, paths absolute;
    text blocks are separated by an empty line. Exit code 2 when a recording could not be read
    (each is logged once), after the others are shown."""
    try:
        cluster.parse_scheduler(args.scheduler)
        paths = folder_recordings(args.file)
    except (FormatError, cluster.SchedulerError) as exc:
        print(f"evpipe {NAME}: {exc}", file=sys.stderr)
        return 2
    if paths is None:
        try:
            summary = describe(args.format, args.topic, reader_options(args), args.file)
        except READ_ERRORS as exc:
            return reader_problem(NAME, args.file, exc)
        show(summary, args.json)
        return 0
    if options_refused(NAME, args, paths[0]):
        return 2
    mapped = map_recordings(NAME, args, functools.partial(
        describe, args.format, args.topic, reader_options(args)), paths)
    if mapped is None:
        return 2
    for i, summary in enumerate(s for s in mapped.results if s is not None):
        if i and not args.json:
            print()
        show(summary, args.json)
    return 2 if mapped.failed else 0
