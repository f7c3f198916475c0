"""Two `actconv report` folders of one study, CSV cell for cell: what a refactor must leave alone.

    python benchmarks/compare_reports.py BEFORE/report AFTER/report [--tol 1e-9]

Cells are compared as text; with --tol, two numbers also match when they differ by at most
tol relative to the larger (for a change that reorders a sum), also inside a JSON cell (a
claim's `numbers`). Exit 1 on any difference.
"""
import argparse
import csv
import json
import math
import sys
from pathlib import Path


def same(a: str, b: str, tol: float) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return tol > 0 and _same_json(a, b, tol)
    return tol > 0 and math.isclose(x, y, rel_tol=tol, abs_tol=0.0)


def _same_json(a: str, b: str, tol: float) -> bool:
    """Two JSON cells (a claim's `numbers`) alike but for numbers within tol."""
    try:
        x, y = json.loads(a), json.loads(b)
    except ValueError:
        return False
    return _alike(x, y, tol)


def _alike(x, y, tol: float) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_alike(x[k], y[k], tol) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_alike(u, v, tol) for u, v in zip(x, y))
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
        return x == y or math.isclose(x, y, rel_tol=tol, abs_tol=0.0)
    return x == y


def compare(before: Path, after: Path, tol: float = 0.0) -> list[str]:
    """Every difference between the two folders' CSV files, one line each."""
    names = sorted(p.name for p in before.glob("*.csv"))
    problems = [f"only in one folder: {n}" for n in sorted({p.name for p in after.glob("*.csv")} ^ set(names))]
    for name in names:
        if not (after / name).exists():
            continue
        a, b = (list(csv.reader(open(d / name, newline=""))) for d in (before, after))
        if len(a) != len(b):
            problems.append(f"{name}: {len(a) - 1} rows before, {len(b) - 1} after")
            continue
        for i, (ra, rb) in enumerate(zip(a, b)):
            if len(ra) != len(rb) or not all(same(x, y, tol) for x, y in zip(ra, rb)):
                problems.append(f"{name}: row {i} differs")
                break
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--tol", type=float, default=0.0, help="relative tolerance for numbers (default: exact)")
    args = p.parse_args(argv)
    problems = compare(args.before, args.after, args.tol)
    files = list(args.before.glob("*.csv"))
    rows = sum(sum(1 for _ in open(f)) - 1 for f in files)
    print("\n".join(problems) if problems else f"{len(files)} CSV files, {rows} rows: identical"
          + (f" within {args.tol:g}" if args.tol else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
