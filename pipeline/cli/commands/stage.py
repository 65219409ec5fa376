"""`evpipe stage NAME -c CONFIG`: run one node of a graph here, so a graph can span hosts."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

from pipeline.runtime.config import ConfigError, load
from pipeline.runtime.graph import run_one
from pipeline.runtime.links import endpoint_problem
from pipeline.runtime.recovery import FolderInUse, hold, resume_path
from sensors.readers import FormatError

NAME = "stage"
HELP = "run a single node (source, stage or sink) of a config's graph in this process"

log = logging.getLogger("evpipe")


def add_arguments(parser) -> None:
    parser.add_argument("name", help="node name, as in [stage.NAME], [source.NAME] or [sink.NAME]")
    parser.add_argument("-c", "--config", default="config.toml", help="graph config (TOML)")
    parser.add_argument("--run-dir", default="", help="folder for default ipc:// link addresses "
                        "(default: <tmp>/evpipe-<graph name>); links between hosts need tcp:// addresses")
    parser.add_argument("--metrics", default="", help="metrics collector address to report to")
    parser.add_argument("--fresh", action="store_true",
                        help="start afresh: forget the resume point a killed earlier process of this "
                             "node left in the run folder (without it, the node resumes from there: "
                             "docs/architecture.md, Recovery)")


def main(args) -> int:
    try:
        config = load(args.config)
        if args.name not in config.nodes:
            raise ConfigError(f"{args.config}: no node named {args.name!r}; nodes: {', '.join(sorted(config.nodes))}")
        if args.metrics and endpoint_problem(args.metrics):
            raise ConfigError(f"--metrics: {endpoint_problem(args.metrics)}")
        run_dir = args.run_dir or os.path.join(tempfile.gettempdir(), f"evpipe-{config.graph.name}")
        try:
            os.makedirs(run_dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"run folder {run_dir}: cannot make it ({exc.strerror})") from None
        hold(run_dir, args.name)  # released when this process ends
        if args.fresh:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(resume_path(run_dir, [args.name]))
        return run_one(config, args.name, run_dir, args.metrics)
    except (ConfigError, FormatError, FolderInUse) as exc:
        log.error("%s", exc)
        return 2
