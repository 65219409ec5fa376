"""``evpipe convert IN OUT``: any readable recording to AEDAT4, .npz, CSV, AEDAT 3.1 or an MCAP
rosbag2 file of event_camera_msgs/EventPacket messages (docs/ros2.md); a folder of recordings
into a folder, file by file, mapped over ``--scheduler`` (docs/cluster.md)."""

from __future__ import annotations

import functools
import os
import sys
from collections import Counter

from pipeline.cli.commands.info import (
    READ_ERRORS,
    add_reader_arguments,
    file_format,
    folder_recordings,
    map_recordings,
    options_refused,
    reader_options,
    reader_problem,
)
from pipeline.learn import cluster
from sensors import writers
from sensors.readers import FormatError

NAME = "convert"
HELP = ("convert a recording, or a folder of recordings; the output format follows OUT's suffix "
        "(.aedat4, .npz, .csv, .aedat, .mcap), or --suffix for a folder")
SUFFIXES = (*writers.WRITERS, ".mcap")


def add_arguments(parser) -> None:
    parser.add_argument("input", help="recording to read (format detected from its content), or a "
                                      "folder of recordings (files, or one subfolder per class)")
    parser.add_argument("output", help="file to write (its folder is created if missing); for a "
                                       "folder IN, the folder to write into, with IN's layout")
    parser.add_argument("--suffix", choices=SUFFIXES, default=".npz",
                        help="a folder IN: the suffix, hence the format, of the files written "
                             "(default .npz)")
    add_reader_arguments(parser)
    cluster.add_arguments(parser)
    parser.epilog = ("With a folder IN, --scheduler spreads its recordings over the workers, "
                     "which read them and write the converted files themselves: IN and OUT must "
                     "be visible to every worker at the same path (a shared file system). A "
                     "single file is always converted in this process.")


def convert_file(format: str, topic: str, options: dict, source, target) -> dict:
    """Read ``source`` and write ``target``, whose suffix picks the writer; with ``topic``, the
    topic read from a rosbag2 input and, for an .mcap target, the topic written (default
    /events, whatever the input). Returns ``sensors.writers.convert``'s summary."""
    mcap = writers.writable(target, SUFFIXES) == ".mcap"
    fmt = file_format(source, format, topic, required=not mcap)
    if mcap:
        from sensors.rosbag import DEFAULT_TOPIC, convert

        return convert(source, target, fmt, topic or DEFAULT_TOPIC, **options)
    return writers.convert(source, target, fmt, **options)


def target_path(out_dir: str, suffix: str, root: str, path: str) -> str:
    """Where the recording ``path`` under the folder ``root`` is written: at the same place under
    ``out_dir``, its suffix replaced by ``suffix``."""
    stem = os.path.splitext(os.path.relpath(path, root))[0]
    return os.path.join(out_dir, stem + suffix)


def convert_into(out_dir: str, suffix: str, root: str, format: str, topic: str, options: dict,
                 path: str) -> dict:
    """``convert_file`` of the recording ``path`` of the folder ``root`` to its ``target_path``;
    what a worker runs for each file of a folder."""
    return convert_file(format, topic, options, path, target_path(out_dir, suffix, root, path))


def done_line(done: dict) -> str:
    return f"{done['events']} events {done['width']}x{done['height']} ({done['format']}) -> {done['to']}"


def convert_folder(args, paths: list[str]) -> int:
    """Every recording of the folder ``args.input`` into ``args.output`` on ``--scheduler``, one
    line per file written, in path order; 2 when a file failed (each logged once) or the output
    folder cannot be made or would get two files of one name."""
    root, out_dir = os.path.abspath(args.input), os.path.abspath(args.output)
    targets = Counter(target_path(out_dir, args.suffix, root, path) for path in paths)
    clash = next((target for target, count in targets.items() if count > 1), None)
    if clash is not None:
        print(f"evpipe {NAME}: {targets[clash]} recordings of {args.input} would be written to "
              f"{clash}", file=sys.stderr)
        return 2
    if options_refused(NAME, args, paths[0], required=args.suffix != ".mcap"):
        return 2
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        print(f"evpipe {NAME}: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    mapped = map_recordings(NAME, args, functools.partial(
        convert_into, out_dir, args.suffix, root, args.format, args.topic, reader_options(args)),
        paths, (*READ_ERRORS, OSError))
    if mapped is None:
        return 2
    for done in mapped.results:
        if done is not None:
            print(done_line(done))
    return 2 if mapped.failed else 0


def main(args) -> int:
    """``--topic`` picks the topic of a rosbag2 input; with OUT ending in .mcap it is also the
    topic written (default /events), whatever the input."""
    try:
        cluster.parse_scheduler(args.scheduler)
        paths = folder_recordings(args.input)
    except (FormatError, cluster.SchedulerError) as exc:
        print(f"evpipe {NAME}: {exc}", file=sys.stderr)
        return 2
    if paths is not None:
        return convert_folder(args, paths)
    try:
        done = convert_file(args.format, args.topic, reader_options(args), args.input, args.output)
    except READ_ERRORS as exc:
        return reader_problem(NAME, args.input, exc)
    except OSError as exc:  # the output (or its folder) cannot be created or written
        print(f"evpipe {NAME}: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    print(done_line(done))
    return 0
