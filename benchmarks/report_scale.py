#!/usr/bin/env python3
"""`actconv report` of two source trees on synthetic stores of growing size, side by side.

    python benchmarks/report_scale.py --base PATH --sizes 10000,30000,100000 [--work DIR]
        [--before-max 30000] [--timeout 1800]

PATH is a checkout of the baseline (e.g. `git worktree add --detach /tmp/base main`); the
tree this script is in is the "after". Per size, a store is written once by synth_store.py
(kept in --work and reused when it is there), then each tree reports it: wall time, the
largest process's peak RSS and the whole process tree's peak (private pages of each process,
shared pages once: the figure workers count), sampled from /proc as bench.py does. The
baseline is skipped above --before-max runs (it loads every row into pandas). Prints a
markdown table: runs, rows, time and peak memory, before and after.
"""
import argparse
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
MB = 1024 * 1024


def report_cmd(src: Path, store: Path) -> list[str]:
    code = (f"import sys; sys.path.insert(0, {str(src)!r}); from actconv.cli import main; "
            f"main(['report', {str(store)!r}])")
    return [sys.executable, "-c", code]


def timed(cmd: list[str], timeout: float, env=None) -> dict:
    """Wall time and peak memory (MB) of a command; 'timeout' or 'failed' in place of numbers."""
    from bench import TreeMemory  # its /proc sampler: the largest process and the whole tree
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    mem = TreeMemory(proc.pid)
    try:
        out = proc.communicate(timeout=timeout)[0]
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        proc.kill()
        out, status = proc.communicate()[0], "timeout"
    wall = time.perf_counter() - start
    mem.stop()
    if status == "failed":
        print(out[-3000:], file=sys.stderr)
    return dict(status=status, wall_s=wall, rss_mb=mem.peak_rss / MB, tree_mb=mem.peak_tree / MB)


def ensure_store(work: Path, runs: int) -> Path:
    """The synthetic store of this size in work, written (by this tree's synth_store.py) if missing."""
    out = work / f"synth-{runs}"
    if not (out / "actconv.sqlite").exists():
        subprocess.run([sys.executable, str(HERE / "synth_store.py"), str(out), "--runs", str(runs)],
                       check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return out


def rows(store: Path) -> dict:
    with sqlite3.connect(store / "actconv.sqlite") as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("batches", "diagnostics")}


def cell(r: dict | None) -> str:
    if r is None:
        return "not run | not run"
    if r["status"] != "ok":
        return f"{r['status']} after {r['wall_s']:.0f} s | {r['tree_mb']:.0f} MB"
    return f"{r['wall_s']:.0f} s | {r['rss_mb']:.0f} / {r['tree_mb']:.0f} MB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, type=Path, help="a checkout of the baseline (its src/ is used)")
    p.add_argument("--sizes", default="10000,30000,100000")
    p.add_argument("--work", type=Path, default=Path("/tmp/actconv-report-scale"))
    p.add_argument("--before-max", type=int, default=30_000, help="largest store the baseline reports")
    p.add_argument("--after-only", action="store_true")
    p.add_argument("--before-only", action="store_true")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per report")
    args = p.parse_args()
    if not (args.base / "src" / "actconv").is_dir():
        raise SystemExit(f"report_scale: {args.base} has no src/actconv (give a checkout of the baseline)")
    args.work.mkdir(parents=True, exist_ok=True)
    lines = ["| runs | batch rows | diagnostics rows | before: time | before: peak (largest / tree) "
             "| after: time | after: peak (largest / tree) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for runs in map(int, args.sizes.split(",")):
        store = ensure_store(args.work, runs)
        n = rows(store)
        before = after = None
        if not args.after_only and runs <= args.before_max:
            before = timed(report_cmd(args.base / "src", store), args.timeout)
        if not args.before_only:
            after = timed(report_cmd(ROOT / "src", store), args.timeout)
        lines.append(f"| {runs:,} | {n['batches']:,} | {n['diagnostics']:,} | {cell(before)} | {cell(after)} |")
        print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
