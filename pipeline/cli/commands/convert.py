"""``evpipe convert IN OUT``: any readable recording to AEDAT4, .npz, CSV, AEDAT 3.1 or an MCAP
rosbag2 file of event_camera_msgs/EventPacket messages (docs/ros2.md)."""

from __future__ import annotations

import sys

from pipeline.cli.commands.info import (
    add_reader_arguments,
    reader_format,
    reader_options,
    reader_problem,
)
from sensors.readers import FormatError

NAME = "convert"
HELP = ("convert a recording; the output format follows OUT's suffix (.aedat4, .npz, .csv, .aedat, "
        ".mcap)")


def add_arguments(parser) -> None:
    parser.add_argument("input", help="recording to read (format detected from its content)")
    parser.add_argument("output", help="file to write (its folder is created if missing)")
    add_reader_arguments(parser)


def main(args) -> int:
    """``--topic`` picks the topic of a rosbag2 input; with OUT ending in .mcap it is also the
    topic written (default /events), whatever the input."""
    mcap = args.output.lower().endswith(".mcap")
    try:
        fmt = reader_format(args, args.input, required=not mcap)
        if mcap:
            from sensors.rosbag import DEFAULT_TOPIC, convert

            done = convert(args.input, args.output, fmt, args.topic or DEFAULT_TOPIC,
                           **reader_options(args))
        else:
            from sensors.writers import convert

            done = convert(args.input, args.output, fmt, **reader_options(args))
    except (FormatError, TypeError) as exc:
        return reader_problem(NAME, args.input, exc)
    except OSError as exc:  # the output (or its folder) cannot be created or written
        print(f"evpipe convert: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    print(f"{done['events']} events {done['width']}x{done['height']} ({done['format']}) -> {done['to']}")
    return 0
