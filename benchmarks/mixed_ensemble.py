#!/usr/bin/env python3
"""A cell's search trials and seeds as one mixed ensemble unit against one unit per setting, side by side.

12 SGD settings (lr x momentum) x 3 seeds of MLP(64) on mnist-5k, n 300, 3 epochs, one
thread: trained as one unit of 36 members (what plan_units now forms), as 12 units of 3
seeds (what it formed before), and, for scale, as 36 loop runs. Rounds alternate, so that
drift of a shared machine hits every arm alike; the median of each is reported with the
ratio, and every member of the mixed unit is checked bitwise against its per-setting twin.

    PYTHONPATH=src python benchmarks/mixed_ensemble.py [--rounds 3] [--loop]
"""
import argparse
import statistics
import time
from dataclasses import replace

import numpy as np

from actconv.study import data as datasets
from actconv.study.config import ModelSpec, RunSpec
from actconv.train.ensemble import train_ensemble
from actconv.train.loop import train_run

LRS = (0.01, 0.03, 0.1, 0.3)
MOMENTA = (0.0, 0.5, 0.9)
SEEDS = (1, 2, 3)


def specs(hidden: int, n_train: int, epochs: int) -> list[list[RunSpec]]:
    """One list of seeds per setting."""
    base = dict(model="mlp", model_spec=ModelSpec("mlp", hidden_units=hidden), activation="relu",
                seed=0, n_train=n_train, epochs=epochs, engine="ensemble")
    return [[RunSpec(**{**base, "lr": lr, "momentum": m, "seed": s}) for s in SEEDS]
            for lr in LRS for m in MOMENTA]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def same(a, b) -> bool:
    return (np.array_equal(a.batches["loss"], b.batches["loss"], equal_nan=True)
            and np.array_equal(a.batches["accuracy"], b.batches["accuracy"]) and a.epochs == b.epochs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--loop", action="store_true", help="also time the 36 runs on the loop engine")
    args = p.parse_args(argv)
    data = datasets.load("mnist-5k")
    per_setting = specs(args.hidden, args.n_train, args.epochs)
    unit = [s for seeds in per_setting for s in seeds]
    arms = {"mixed unit (1 x 36)": lambda: train_ensemble(unit, data),
            "per setting (12 x 3)": lambda: [r for seeds in per_setting for r in train_ensemble(seeds, data)]}
    if args.loop:
        arms["loop (36 x 1)"] = lambda: [train_run(replace(s, engine="loop"), data) for s in unit]
    train_ensemble(per_setting[0], data)  # warm-up: first-call costs out of every arm
    times, results = {name: [] for name in arms}, {}
    for _ in range(args.rounds):
        for name, fn in arms.items():
            t, results[name] = timed(fn)
            times[name].append(t)
    mixed, apart = results["mixed unit (1 x 36)"], results["per setting (12 x 3)"]
    equal = sum(same(a, b) for a, b in zip(mixed, apart))
    print(f"{len(unit)} runs: MLP({args.hidden}), mnist-5k n={args.n_train}, {args.epochs} epochs, "
          f"{len(LRS)} lr x {len(MOMENTA)} momentum x {len(SEEDS)} seeds, 1 thread, {args.rounds} rounds")
    base = statistics.median(times["per setting (12 x 3)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:22s} median {med:6.2f} s  ({', '.join(f'{t:.2f}' for t in ts)})  "
              f"speed-up over per setting x{base / med:.2f}")
    print(f"  bitwise equal, mixed vs per setting: {equal}/{len(unit)} runs")


if __name__ == "__main__":
    main()
