"""`make bench`: run every bench/bench_*.py, print the ratios, write bench/results.json.

Each benchmark module defines ``run() -> list[dict]`` whose records have the keys ``name``,
``ours``, ``peer``, ``unit``, ``ratio`` (ours / peer, higher is better) and ``target`` (the ratio
the issue asks for), measured side by side with the named peer in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys

KEYS = ("name", "ours", "peer", "unit", "ratio", "target")
HERE = pathlib.Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("only", nargs="*", help="module names to run (default: all)")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    names = args.only or sorted(p.stem for p in HERE.glob("bench_*.py"))
    results = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}", flush=True)
        for record in module.run():
            missing = [k for k in KEYS if k not in record]
            if missing:
                raise ValueError(f"{name}: result {record.get('name')!r} lacks {missing}")
            met = "ok " if record["target"] is None or record["ratio"] >= record["target"] else "LOW"
            print(f"  {met} {record['name']:<52} ours {record['ours']:>12.4g} peer "
                  f"{record['peer']:>12.4g} {record['unit']:<10} ratio {record['ratio']:.3g}"
                  f" (target {record['target']})", flush=True)
            results.append(record)
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
