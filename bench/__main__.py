"""Runs every benchmark section and prints one table of ratios.

A section is a module `bench.<name>` with `run() -> list[Row]`. Sections
named on the command line run alone (`python -m bench hips catalog`).
"""

from __future__ import annotations

import importlib
import sys
import traceback

from bench.table import Row, print_table

SECTIONS = [
    "validation",
    "check_first",
    "hips",
    "gaia",
    "selector",
    "charts",
    "storage",
    "mosaic",
    "catalog",
    "upload",
]


def main(argv: list[str]) -> int:
    names = argv or SECTIONS
    rows: list[Row] = []
    failed = False
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            print(f"[bench] section {name}: not built yet", file=sys.stderr)
            continue
        print(f"[bench] running {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(module.run())
        except Exception:
            traceback.print_exc()
            failed = True
    print_table(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
