#!/usr/bin/env python3
"""How many runs per second the single writer commits, against how fast one worker trains them.

    python benchmarks/commit_throughput.py [--runs 1000] [--skip-training]

Runs of 1,000 batch rows (n_train 3,200, batch 32, 10 epochs) with diagnostics every 5 steps
(~1,500 rows), made by synth_store.py, are written into a fresh store as the driver writes
them: one transaction per run (`Store.write`) and several per transaction
(`Store.write_many`, as run/queue.py does with what has arrived). The store is first filled
with --prefill runs, since inserts slow as its indexes grow; one write is also made with
SQLite's default 2 MB page cache in place of the store's 64 MB. Then one worker trains the
same shape of run for real (mnist-5k MLP(64), one thread: the loop, and 8 seeds as one
ensemble), and the cluster size at which the writer becomes the bottleneck is commit rate /
one worker's rate. Both measured in this one command, on this machine.
"""
import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth_store import study_for, synth_result  # noqa: E402

from actconv.run.store import Store  # noqa: E402

N_TRAIN = 3200  # 100 steps of 32 x 10 epochs = 1,000 batch rows


def specs(n: int):
    study = study_for(n)
    return [replace(s, n_train=N_TRAIN) for s in study.runs()[:n]]


def commit_rate(results, out: Path, per_transaction: int, prefill, cache_kb: int | None = None) -> float:
    """Runs per second written into a store already holding prefill, per_transaction runs per commit
    (cache_kb: SQLite's page cache, in place of the store's own)."""
    with Store(out) as store:
        if cache_kb:
            store.conn.execute(f"PRAGMA cache_size = {-cache_kb}")
        store.write_many(prefill)
        start = time.perf_counter()
        for i in range(0, len(results), per_transaction):
            store.write_many(results[i:i + per_transaction])
        return len(results) / (time.perf_counter() - start)


def training_rate() -> tuple[float, float]:
    """Runs per second one single-threaded worker trains: the loop engine, and 8 seeds as one ensemble."""
    from actconv.study import data as datasets
    from actconv.train.ensemble import train_ensemble
    from actconv.train.loop import train_run
    from actconv.train.seeding import set_threads
    set_threads(1)
    data = datasets.load("mnist-5k")
    base = replace(specs(1)[0], activation="relu", diagnostics=True, grad_every=5, engine="loop")
    start = time.perf_counter()
    r = train_run(base, data)
    loop = 1 / (time.perf_counter() - start)
    assert len(r.batches["step"]) == 1000, len(r.batches["step"])
    unit = [replace(base, engine="ensemble", seed=s) for s in range(1, 9)]
    start = time.perf_counter()
    train_ensemble(unit, data)
    return loop, len(unit) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000, help="runs written per measurement")
    p.add_argument("--prefill", type=int, default=2000, help="runs already in the store")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-training", action="store_true")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    all_specs = specs(args.runs + args.prefill)
    results = [synth_result(s, rng) for s in all_specs]
    prefill, results = results[:args.prefill], results[args.prefill:]
    done = [r for r in results if r.status != "failed"]
    rows = sum(len(r.batches["step"]) for r in done) / len(done)
    diag = sum(len(r.diagnostics) for r in done) / len(done)
    print(f"{len(results)} runs of {rows:.0f} batch rows and {diag:.0f} diagnostics rows (mean), "
          f"into a store of {len(prefill)} runs")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = ((1, 2000), (1, None), (8, None), (32, None))
        for r in range(args.rounds):  # alternating, so that a busy moment slows every configuration alike
            for k, cache in configs:
                rates.setdefault((k, cache), []).append(
                    commit_rate(results, Path(tmp) / f"r{r}-k{k}-{cache}", k, prefill, cache))
        rates = {c: statistics.median(v) for c, v in rates.items()}
        for k, cache in configs:
            print(f"  {k:>3} runs per transaction: {rates[k, cache]:7.1f} runs/s committed (median of "
                  f"{args.rounds})" + (f", SQLite's default {cache} kB page cache" if cache else ""))
    if args.skip_training:
        return
    loop, ensemble = training_rate()
    print(f"one worker (1 thread) trains {loop:.3f} runs/s with the loop, {ensemble:.3f} runs/s "
          f"as an 8-seed ensemble")
    for name, rate in (("loop", loop), ("ensemble", ensemble)):
        print(f"  writer saturates at {rates[1, None] / rate:,.0f} {name} workers committing one run a "
              f"transaction, {rates[32, None] / rate:,.0f} with 32 a transaction")


if __name__ == "__main__":
    main()
