"""What scoring a tuning run after the last epoch only (`tune_eval = "last"`) saves, side by
side in one process, one thread, CPU seconds: a TinyVGG(16) run (loop) and an MLP(64) unit of
36 runs (12 settings x 3 seeds, ensemble) at n 600 / n 100, 800, 3200, 10 epochs, 500
validation images, each scoring every epoch and then after the last only; the final test
losses must agree.

    python benchmarks/tune_eval_cost.py [--activations relu,selu,tanh] [--sizes 100,800,3200]
"""
import argparse
import time
from dataclasses import replace

import numpy as np

from actconv.study import data as datasets
from actconv.study.config import ModelSpec, RunSpec
from actconv.train.ensemble import train_ensemble
from actconv.train.loop import train_run
from actconv.train.seeding import set_threads


def cpu(f):
    t = time.process_time()
    out = f()
    return time.process_time() - t, out


def vgg(data, act: str) -> str:
    base = RunSpec(model="tinyvgg16", model_spec=ModelSpec("tinyvgg", hidden_units=16), activation=act,
                   seed=1, n_train=600, epochs=10, lr=0.05, momentum=0.5, validation=500)
    train_run(replace(base, epochs=1), data)  # oneDNN's first kernels, outside the timing
    (a, every), (b, last) = (cpu(lambda ev=ev: train_run(replace(base, evaluate=ev), data))
                             for ev in ("every", "last"))
    assert every.epochs[-1]["test_loss"] == last.epochs[-1]["test_loss"]
    return f"TinyVGG(16) {act:10s} n 600: every {a:6.2f} s, last {b:6.2f} s ({b / a:.2f})"


def mlp(data, n: int) -> str:
    unit = [RunSpec(model="mlp", model_spec=ModelSpec("mlp", hidden_units=64), activation="selu", seed=s,
                    n_train=n, epochs=10, lr=float(lr), momentum=float(m), validation=500, engine="ensemble")
            for lr, m in zip(np.geomspace(0.001, 1, 12), np.linspace(0, 0.9, 12)) for s in (1, 2, 3)]
    train_ensemble(unit[:3], data)
    (a, every), (b, last) = (cpu(lambda ev=ev: train_ensemble([replace(s, evaluate=ev) for s in unit], data))
                             for ev in ("every", "last"))
    assert [r.epochs[-1]["test_loss"] for r in every] == [r.epochs[-1]["test_loss"] for r in last]
    return f"MLP(64) unit of 36, selu, n {n:5d}: every {a:6.2f} s, last {b:6.2f} s ({b / a:.2f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--activations", default="relu,selu,tanh")
    p.add_argument("--sizes", default="100,800,3200")
    args = p.parse_args()
    data = datasets.load("mnist-5k")
    set_threads(1)
    for act in args.activations.split(","):
        print(vgg(data, act), flush=True)
    for n in map(int, args.sizes.split(",")):
        print(mlp(data, n), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
