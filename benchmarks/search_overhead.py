"""What a search's batches cost beside training: the same runs trained by `run_search` (one
`run_study` per batch of trials, then the confirm batch) and by one `run_study` of all of them.

    python benchmarks/search_overhead.py [--jobs 2] [--executor local|ray] [--trials 6] [--rounds 2]

The search runs first (it decides the runs); the plain study then trains exactly its runs in
a fresh store. Rounds alternate the two, each in a fresh directory, so a noisy machine slows
both alike; each round prints both wall times and their ratio.
"""
import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from actconv.run.queue import run_study
from actconv.run.search import _grid, _study, run_search
from actconv.study import config


def study(trials: int):
    return config.study_from_dict({
        "name": "search-overhead", "dataset": "digits", "models": {"m": {"kind": "mlp", "hidden_units": 32}},
        "activations": ["relu", "tanh", "selu", "gelu"], "n_train": [200, 800], "epochs": 3, "validation": 200,
        "search": {"space": {"lr": "log(0.01, 1)", "momentum": [0, 0.9]}, "trials": trials,
                   "tune_seeds": [1, 2, 3], "confirm_seeds": "11-15"}})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--executor", default="local")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    st = replace(study(args.trials), device="cpu")
    kw = dict(jobs=args.jobs, executor=args.executor, progress=False)
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            found = run_search(st, Path(tmp) / "search", **kw)
            searched = time.perf_counter() - t0
            grids = [_grid(t.cell, st.search.tune_seeds, t.params) for t in found.trials]
            grids += [_grid(c, st.search.confirm_seeds, t.params) for c, t in found.best.items()]
            plain = _study(st, grids, False)
            t0 = time.perf_counter()
            done = run_study(plain, Path(tmp) / "plain", **kw)
            once = time.perf_counter() - t0
            assert done.executed == found.executed, (done.executed, found.executed)
            print(f"round {r + 1}: {found.executed} runs; search {searched:.1f} s "
                  f"({args.trials} batches + confirm), one study {once:.1f} s, "
                  f"ratio {searched / once:.2f}", flush=True)


if __name__ == "__main__":
    main()
