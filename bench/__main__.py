"""`make bench`: run every bench/bench_*.py, print the ratios, write bench/results.json.

Each benchmark module defines ``run() -> list[dict]`` whose records have the keys ``name``,
``ours``, ``peer``, ``unit``, ``ratio`` and ``target``:

- against a peer (a program doing the same work, run side by side in the same run): ``peer`` is
  its figure, ``ratio`` = ours / peer with higher better, and ``target``, when there is one, the
  ratio asked for;
- against a goal with no peer: ``peer`` and ``ratio`` are None and ``target`` is the goal itself,
  in ``unit``, for ``ours`` (at least the goal; with ``"lower_is_better": True``, at most).

A row prints "ok" when its target is met, "LOW" when it is missed and "--" when it has no target.
Every record also gets ``module`` and ``run`` (the UTC start of this invocation); results.json
keeps the records of the modules not run this time and replaces those of the modules run, so
the rows of one module always come from one run. Options the parser does not know go to the
modules' ``run(options)``, e.g. ``python -m bench bench_soak --minutes 10``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import pathlib
import sys

KEYS = ("name", "ours", "peer", "unit", "ratio", "target")
HERE = pathlib.Path(__file__).parent


def verdict(record: dict) -> str:
    """"ok" (target met), "LOW" (missed) or "--" (no target)."""
    target = record["target"]
    if target is None:
        return "--"
    if record["peer"] is None:
        lower = record.get("lower_is_better", False)
        met = record["ours"] <= target if lower else record["ours"] >= target
    else:
        met = record["ratio"] is not None and record["ratio"] >= target
    return "ok" if met else "LOW"


def line(record: dict) -> str:
    """One printed row."""
    mark = verdict(record)
    if record["peer"] is None:
        goal = "" if record["target"] is None else f"goal {record['target']:.4g}"
        return (f"  {mark:<3} {record['name']:<56} ours {record['ours']:>12.4g} "
                f"{goal:>17} {record['unit']:<10} (no peer)")
    target = "" if record["target"] is None else f" (target {record['target']})"
    return (f"  {mark:<3} {record['name']:<56} ours {record['ours']:>12.4g} peer "
            f"{record['peer']:>12.4g} {record['unit']:<10} ratio {record['ratio']:.3g}{target}")


def extras(record: dict) -> str:
    """The record's other short scalar fields, for the eye."""
    items = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in record.items() if k not in KEYS and k not in ("module", "run")
             and isinstance(v, (int, float, str)) and len(str(v)) <= 40]
    return ("      " + ", ".join(items)) if items else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("only", nargs="*", help="module names to run (default: all)")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args, options = parser.parse_known_args(argv)
    sys.path.insert(0, str(HERE.parent))
    names = args.only or sorted(p.stem for p in HERE.glob("bench_*.py"))
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}", flush=True)
        for record in module.run(options) if options else module.run():
            missing = [k for k in KEYS if k not in record]
            if missing:
                raise ValueError(f"{name}: result {record.get('name')!r} lacks {missing}")
            record = {**record, "module": name, "run": started}
            print(line(record), flush=True)
            more = extras(record)
            if more:
                print(more, flush=True)
            results.append(record)
    out = pathlib.Path(args.out)
    kept = []
    if out.exists():
        try:
            kept = [r for r in json.loads(out.read_text())
                    if isinstance(r, dict) and r.get("module") not in (None, *names)]
        except ValueError:
            kept = []
    out.write_text(json.dumps(kept + results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
