"""``evpipe devices``: list connected iniVation cameras (dv-processing discovery)."""

from __future__ import annotations

import json

NAME = "devices"
HELP = "list connected event cameras (serial numbers to use in a camera source)"


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON array")


def main(args) -> int:
    from sensors.camera import devices

    found = devices()
    if args.json:
        print(json.dumps(found))
    elif not found:
        print("no cameras found")
    for device in [] if args.json else found:
        print(f"{device['serial']:<16} {device['model']:<24} firmware {device['firmware']} "
              f"usb {device['usb']}")
    return 0
