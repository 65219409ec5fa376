"""evpipe keys: write CURVE certificate pairs for secured tcp links (docs/wire.md, Security)."""

from __future__ import annotations

import logging

from pipeline.core.files import file_problem
from pipeline.security import write_keys

log = logging.getLogger("evpipe")

NAME = "keys"
HELP = "write CURVE certificate pairs (NAME.key, NAME.key_secret) for secured links"


def add_arguments(parser) -> None:
    parser.add_argument("folder", help="folder to write the certificates into (created if needed)")
    parser.add_argument("names", nargs="+", metavar="NAME",
                        help="one pair per name, e.g. camera robot")


def main(args) -> int:
    try:
        for name in args.names:
            public, secret = write_keys(args.folder, name)
            print(f"{public}\n{secret}")
    except OSError as exc:
        log.error("%s: cannot write certificates (%s)", args.folder, file_problem(exc))
        return 2
    except ValueError as exc:  # a name with a folder in it
        log.error("%s", exc)
        return 2
    return 0
