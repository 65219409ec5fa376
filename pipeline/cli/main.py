"""The ``evpipe`` command line: one program, one subcommand per module in pipeline.cli.commands.

A reader that closes standard output early (``evpipe info F | head -1``) ends the command
quietly: the rest of its output goes to /dev/null and the exit code is 141 (128 + SIGPIPE, what
a shell reports for a program that SIGPIPE ended), with no traceback. Ctrl-C before a command
has taken over SIGINT (while it loads) ends it with 130, also without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import pkgutil
import signal
import sys

import pipeline.cli.commands as commands

CLOSED_PIPE_EXIT = 128 + signal.SIGPIPE
INTERRUPTED_EXIT = 128 + signal.SIGINT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evpipe", description=(
        "Streaming event-camera pipeline: replay or capture events, filter, time surfaces, "
        "spiking network, early decisions."))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.metadata.version('evpipe')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # --help and --version print here
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at exit
        return code
    except BrokenPipeError:
        from pipeline.runtime.worker import stdout_closed  # loaded by every command already

        if not stdout_closed():
            raise  # another pipe broke: a real error, keep its traceback
        # the Python docs' recipe (signal module, "Note on SIGPIPE"): Python flushes stdout
        # again at exit, so point it at /dev/null to keep that flush from failing too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return CLOSED_PIPE_EXIT
    except KeyboardInterrupt:  # Ctrl-C while starting, before a command handles SIGINT itself
        return INTERRUPTED_EXIT
