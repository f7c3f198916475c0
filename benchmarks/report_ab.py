"""`actconv report` by two versions of actconv on one store, side by side, alternating.

    python benchmarks/report_ab.py STORE --before REV [--rounds 3]

REV (a commit, tag or branch) is checked out into a temporary git worktree and run with
PYTHONPATH pointing at it; the working tree's own `src` is the "after". The two alternate
round by round so that a noisy machine slows both alike; each round prints both wall
times, their CPU and the ratio. Each run rewrites STORE/report (copy the store first if
you want to keep its report).
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import run_timed

ROOT = Path(__file__).resolve().parent.parent


def report_cmd(src: Path, store: str) -> list[str]:
    code = f"import sys; sys.path.insert(0, {str(src)!r}); from actconv.cli import main; main(['report', {store!r}])"
    return [sys.executable, "-c", code]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("--before", required=True, help="the git revision to compare against")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if not (Path(args.store) / "actconv.sqlite").exists():
        raise SystemExit(f"report_ab: no results store in {args.store}")
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), args.before],
                       check=True)
        try:
            ratios = []
            print(f"{'round':>5} {'before s':>9} {'cpu s':>7} {'after s':>8} {'cpu s':>7} {'before/after':>12}")
            for r in range(1, args.rounds + 1):
                b = run_timed(report_cmd(old / "src", args.store))
                a = run_timed(report_cmd(ROOT / "src", args.store))
                ratios.append(b.wall_s / a.wall_s)
                print(f"{r:>5} {b.wall_s:>9.1f} {b.cpu_s:>7.1f} {a.wall_s:>8.1f} {a.cpu_s:>7.1f} {ratios[-1]:>11.2f}x")
            print(f"median before/after: {statistics.median(ratios):.2f}x")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)


if __name__ == "__main__":
    main()
