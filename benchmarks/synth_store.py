#!/usr/bin/env python3
"""A realistic synthetic results store, written through the store's own API, for scale benchmarks.

    python benchmarks/synth_store.py OUT --runs 10000 [--seed 0]

The seed preset's shape (2 MLPs x 21 activations x n_train 600..2400 x 10 epochs, batch 32,
diagnostics every 5 steps) with as many seeds as the run count needs: per run a decreasing
batch-loss curve with noise (its floor and speed set by the activation, the bounded ones on
the original MLP's logits stuck at their loss floor), epoch rows, probe and gradient-norm
diagnostics rows as the recorder writes them; about 2% of runs diverge (a NaN batch loss,
as the loop stores it) and 0.5% fail (no rows). The study is registered and every run
stored with `Store.register` and `Store.write_many`, as `actconv run` does, so the report
reads it as a real study. Vectorised with NumPy: the writer is the cost.
"""
import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from actconv.run.store import Store, store_path
from actconv.study import activations as acts
from actconv.study.config import load_preset, with_overrides
from actconv.study.metrics import HIST_METRICS, LAYER_METRICS, OUTPUT, RATIO
from actconv.train.result import RunResult

MODELS = ("mlp_original", "mlp")
N_TRAIN = (600, 1200, 1800, 2400)
DIVERGED, FAILED = 0.02, 0.005
PROBE_METRICS = LAYER_METRICS + ["weight_norm"] + HIST_METRICS
CHUNK = 200  # runs per transaction (Store.write_many)


def study_for(n_runs: int):
    """The seed preset's MLP grids with enough seeds for n_runs runs (2 x 21 x 4 = 168 per seed)."""
    per_seed = len(MODELS) * len(acts.expand(["relu_family", "modern_family", "sigmoid_tanh_family"])) \
        * len(N_TRAIN)
    seeds = list(range(1, math.ceil(n_runs / per_seed) + 1))
    return with_overrides(load_preset("seed"), models=list(MODELS), seeds=seeds, n_train=list(N_TRAIN))


def _activation_traits(name: str) -> tuple[float, float]:
    """(loss floor on 2,400 images, decay time in steps): a fixed pseudo-random pair per name."""
    h = sum(map(ord, name)) * 2654435761 % 2 ** 32
    return 0.15 + 0.25 * (h % 1000) / 1000, 60 + 240 * (h // 1000 % 1000) / 1000


def synth_result(spec, rng: np.random.Generator) -> RunResult:
    """One run's result as the loop returns it (batches, epochs, diagnostics), from a noisy curve."""
    if rng.random() < FAILED:
        return RunResult(spec, "failed", error="RuntimeError: synthetic failure", wall_s=0.1)
    steps, epochs = math.ceil(spec.n_train / spec.batch_size), spec.epochs
    floor, tau = _activation_traits(spec.activation)
    floor *= (2400 / spec.n_train) ** 0.3
    bounded = acts.BOUNDED_RANGE.get(spec.activation)
    if spec.model_spec.activate_logits and bounded and math.isfinite(bounded[0]):
        floor = max(floor, acts.logit_loss_floor(*bounded))
    t = np.arange(1, steps * epochs + 1)
    mean = floor + (math.log(10) - floor) * np.exp(-t / tau)
    loss = mean * rng.lognormal(0.0, 0.12, len(t))
    acc = np.clip(1.0 - mean / 2.6 + rng.normal(0.0, 0.05, len(t)), 0.0, 1.0)
    acc = np.round(acc * spec.batch_size) / spec.batch_size
    status, diverged_step = "done", None
    if rng.random() < DIVERGED:
        diverged_step = int(rng.integers(1, len(t) + 1))
        loss, acc, t = loss[:diverged_step], acc[:diverged_step], t[:diverged_step]
        loss[-1] = np.nan
        status = "diverged"
    epoch = (t - 1) // steps + 1
    done_epochs = int(epoch[-1]) - (status == "diverged")
    e_loss = np.bincount(epoch, loss, epochs + 1)[1:done_epochs + 1] / steps
    e_acc = np.bincount(epoch, acc, epochs + 1)[1:done_epochs + 1] / steps
    test = e_loss * rng.normal(1.05, 0.03, done_epochs)
    rows = [dict(epoch=0, train_loss=math.log(10) + rng.normal(0, 0.02), train_accuracy=0.1,
                 test_loss=math.log(10) + rng.normal(0, 0.02), test_accuracy=0.1)]
    rows += [dict(epoch=e + 1, train_loss=float(e_loss[e]), train_accuracy=float(e_acc[e]),
                  test_loss=float(test[e]), test_accuracy=float(np.clip(1 - test[e] / 2.6, 0, 1)))
             for e in range(done_epochs)]
    batches = dict(epoch=epoch, step=t, loss=loss, accuracy=acc)
    return RunResult(spec, status, rows, batches, _diagnostics(spec, steps, epoch, t, rng),
                     diverged_step=diverged_step, wall_s=float(rng.uniform(2, 6)),
                     env=dict(torch_version="synthetic", device="cpu", threads=1, dtype="float32"))


def _diagnostics(spec, steps: int, epoch: np.ndarray, t: np.ndarray, rng) -> list[tuple]:
    """Probe rows at epoch 0 and after each finished epoch, gradient norms every grad_every steps."""
    layers = [("layer1", PROBE_METRICS),
              (OUTPUT, PROBE_METRICS if spec.model_spec.activate_logits else ["weight_norm"])]
    rows = []
    last = int(epoch[-1])
    for e in range(last + 1):
        for layer, metrics in layers:
            values = rng.random(len(metrics)) * (1 + e / 10)
            rows += zip([e] * len(metrics), [e * steps] * len(metrics), [layer] * len(metrics), metrics,
                        values.tolist())
    recorded = t[(t - 1) % spec.grad_every == 0]
    norms = rng.lognormal(0.0, 0.5, (len(recorded), 2))
    for (e, s), (g1, g2) in zip(zip(epoch[recorded - 1].tolist(), recorded.tolist()), norms.tolist()):
        rows += [(e, s, "layer1", "grad_norm", g1), (e, s, OUTPUT, "grad_norm", g2),
                 (e, s, RATIO, "grad_ratio", g1 / g2)]
    return rows


def synth_store(out_dir, n_runs: int, seed: int = 0, progress: bool = True) -> dict:
    """Write n_runs synthetic runs into a new store in out_dir; returns counts and rows written."""
    if store_path(out_dir).exists():
        raise SystemExit(f"synth_store: {out_dir} already holds a store; give a new directory")
    study = study_for(n_runs)
    specs = study.runs()[:n_runs]
    rng = np.random.default_rng(seed)
    rows = dict(batches=0, diagnostics=0, epochs=0)
    start = time.perf_counter()
    with Store(out_dir) as store:
        store.register(study.name, json.dumps(asdict(study), default=str), specs, (1, 28, 28), 10)
        for i in range(0, len(specs), CHUNK):
            results = [synth_result(s, rng) for s in specs[i:i + CHUNK]]
            store.write_many(results)
            for r in results:
                rows["batches"] += len(r.batches.get("step", ()))
                rows["diagnostics"] += len(r.diagnostics)
                rows["epochs"] += len(r.epochs)
            if progress and (i // CHUNK) % 25 == 0:
                print(f"  {i + len(results)}/{len(specs)} runs, {time.perf_counter() - start:.0f} s",
                      file=sys.stderr)
        counts = store.summary()
    return dict(runs=len(specs), counts=counts, **rows, seconds=time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(json.dumps(synth_store(args.out, args.runs, args.seed)))


if __name__ == "__main__":
    main()
