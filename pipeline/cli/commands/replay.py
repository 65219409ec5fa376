"""`evpipe replay PATH`: replay a recording or dataset folder to the console or to a socket."""

from __future__ import annotations

import json
import logging
import math

from pipeline.cli.commands.info import add_topic_argument, reader_format
from pipeline.runtime.config import Config, ConfigError, parse
from pipeline.runtime.graph import run, run_one
from pipeline.runtime.links import MODES
from sensors.readers import FormatError

NAME = "replay"
HELP = "replay a recording or dataset folder: print segment summaries, or publish packets"

log = logging.getLogger("evpipe")


def add_arguments(parser) -> None:
    parser.add_argument("path", help="recording file, or folder (class subfolders become labels)")
    parser.add_argument("--format", default="auto", help="file format (default: detect)")
    add_topic_argument(parser)
    parser.add_argument("--speed", type=float, default=0.0,
                        help="1 = real time, 10 = ten times faster, 0 = as fast as possible (default)")
    parser.add_argument("--loop", action="store_true", help="start again at the end")
    parser.add_argument("--packet-us", type=int, default=1000, help="packet length in sensor time (us)")
    parser.add_argument("--packet-events", type=int, default=10_000, help="most events per packet")
    parser.add_argument("--publish", default="", metavar="ADDRESS",
                        help="send packets to this address (e.g. tcp://127.0.0.1:5555) instead of printing")
    parser.add_argument("--mode", choices=MODES, default="live", help="link mode with --publish")


def build(args) -> Config:
    """The command line's graph, replay -> console (or the replay alone with --publish), written
    as a config and loaded as a config file is: checked and placed the same way."""
    link = {"from": "replay", "to": "console", "mode": args.mode if args.publish else "lossless",
            "address": args.publish}
    replay = {"type": "replay", "path": args.path, "format": reader_format(args, args.path),
              "speed": args.speed, "loop": args.loop, "packet_us": args.packet_us,
              "packet_events": args.packet_events}
    tables = [("[graph]", {"name": "replay"}), ("[source.replay]", replay),
              ("[sink.console]", {"type": "console"}), ("[[link]]", link)]
    text = "".join(f"{title}\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in table.items())
                   for title, table in tables)
    return parse(text, "<command line>")


def toml_value(value) -> str:
    """A string, number or boolean as TOML: JSON's spelling, but nan and inf as TOML's (--speed
    nan reaches the config's range check, not its parser)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf, -inf
    return json.dumps(value)


def main(args) -> int:
    try:
        config = build(args)
        if args.publish:  # only the source runs here; the receiver is elsewhere
            return run_one(config, "replay", run_dir="")
        return run(config).exit_code
    except (ConfigError, FormatError) as exc:
        log.error("%s", exc)
        return 2
