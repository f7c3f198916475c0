#!/usr/bin/env python3
"""CPU time of the standard networks (resnet20, timm resnet10t), side by side in one command:
per training image and per evaluated image on a synthetic 3x32x32 npz set, checked against a
run of another shape, a run on the embedded `digits`, and the estimate for a preset.

    PYTHONPATH=src python benchmarks/zoo_cost.py [--preset cifar-small] [--threads 1]

Times are process CPU time of one thread (time.process_time), which other load on the machine
disturbs less than wall time; the load average is printed beside them.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from actconv.study import config
from actconv.study import data as datasets
from actconv.study.config import RunSpec
from actconv.train.loop import train_run

CIFAR_TEST = 10_000  # CIFAR-10's test set, evaluated whole after every epoch and before the first
MODELS = {"resnet20": {"kind": "resnet20"}, "resnet10t": {"kind": "timm:resnet10t"}}


def synthetic_npz(folder: Path, pool: int, test: int) -> str:
    rng = np.random.default_rng(0)
    path = folder / "synthetic.npz"
    np.savez(path, x=rng.integers(0, 256, (pool, 3, 32, 32), dtype=np.uint8), y=rng.integers(0, 10, pool),
             x_test=rng.integers(0, 256, (test, 3, 32, 32), dtype=np.uint8), y_test=rng.integers(0, 10, test))
    return f"npz:{path}"


def cpu_seconds(spec: RunSpec, data, repeats: int = 3) -> float:
    """The least CPU time of `repeats` runs (the others were disturbed, not faster)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        result = train_run(spec, data)
        assert result.status == "done", result.error
        best = min(best, time.process_time() - start)
    return best


def spec_for(table: dict, n: int, epochs: int, batch: int) -> RunSpec:
    m = config.BUILTIN_MODELS[table["kind"]] if table["kind"] in config.BUILTIN_MODELS \
        else config.zoo_model_spec("bench", table)
    return RunSpec(model="m", model_spec=m, activation="relu", seed=1, n_train=n, epochs=epochs,
                   batch_size=batch, lr=0.1, momentum=0.9, dataset="bench")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cifar-small", help="a preset to estimate (its models by kind)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    costs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sub in ("small", "large"):
            (Path(tmp) / sub).mkdir()
        small = datasets.load(synthetic_npz(Path(tmp) / "small", 1024, 256))  # test sets of 256 and 768
        large = datasets.load(synthetic_npz(Path(tmp) / "large", 1024, 768))
        print(f"{'model':<10} {'train ms/img':>12} {'eval ms/img':>11} {'check run':>22} {'predicted':>9} "
              f"{'measured':>8}  digits n=500 1 epoch")
        for name, table in MODELS.items():
            cpu_seconds(spec_for(table, 128, 1, args.batch), small, 1)  # warm-up: kernels, allocator
            a = cpu_seconds(spec_for(table, 256, 1, args.batch), small)  # n*t + (n + 2*256)*e
            b = cpu_seconds(spec_for(table, 512, 1, args.batch), small)  # 2n*t + (2n + 2*256)*e
            c = cpu_seconds(spec_for(table, 256, 1, args.batch), large)  # n*t + (n + 2*768)*e
            per_eval = (c - a) / (2 * 512)
            per_train = (b - a - 256 * per_eval) / 256
            fixed = a - 256 * per_train - (256 + 512) * per_eval
            costs[table["kind"]] = (per_train, per_eval, fixed)
            n, epochs = 768, 2  # another shape: does the model of the cost predict it?
            predicted = n * epochs * per_train + (n + (epochs + 1) * 768) * per_eval + fixed
            measured = cpu_seconds(spec_for(table, n, epochs, args.batch), large)
            digits = cpu_seconds(spec_for(table, 500, 1, args.batch), datasets.load("digits"))
            print(f"{name:<10} {per_train * 1e3:12.2f} {per_eval * 1e3:11.2f} {'n=768, 2 epochs, 768 test':>22} "
                  f"{predicted:8.1f}s {measured:7.1f}s  {digits:.1f}s")
    study = config.load_preset(args.preset)
    total, runs = 0.0, study.runs()
    for s in runs:
        t, e, fixed = costs.get(s.model_spec.kind, (0.0, 0.0, 0.0))
        total += s.n_train * s.epochs * t + (s.n_train + (s.epochs + 1) * (CIFAR_TEST + s.validation)) * e + fixed
    print(f"preset {args.preset}: {len(runs)} runs, estimated {total / 3600:.1f} CPU-hours at {args.threads} "
          f"thread(s) per run (CIFAR-10's {CIFAR_TEST:,} test images each epoch)")


if __name__ == "__main__":
    main()
