"""`evpipe run [CONFIG]`: start the whole graph of a config file."""

from __future__ import annotations

import logging

from pipeline.runtime.config import ConfigError, load
from pipeline.runtime.graph import run
from sensors.readers import FormatError

NAME = "run"
HELP = "run the whole graph of a config file (default: config.toml)"

log = logging.getLogger("evpipe")


def add_arguments(parser) -> None:
    parser.add_argument("config", nargs="?", default="config.toml", help="graph config (TOML)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--threads", dest="runner", action="store_const", const="threads",
                       help="workers as threads of this process (overrides [graph] runner)")
    group.add_argument("--processes", dest="runner", action="store_const", const="processes",
                       help="workers as processes of their own (overrides [graph] runner)")


def main(args) -> int:
    try:
        config = load(args.config, args.runner)
        return run(config).exit_code
    except (ConfigError, FormatError) as exc:
        log.error("%s", exc)
        return 2
