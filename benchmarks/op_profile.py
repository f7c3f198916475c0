"""Where a grid's training time goes: every run of `actconv run FLAGS` trained once in this
process, one thread, under torch.profiler, after one warm-up run (a process's first run pays
oneDNN's kernel generation); prints each operator's share of the time.

    python benchmarks/op_profile.py --models tinyvgg --hidden-units 16 \\
        --activations common_activations --seeds 42,451 --n-train 600,1200 --epochs 3
"""
import os
import sys

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # before torch: the profiler's start/stop chatter
from torch.profiler import ProfilerActivity, profile

from actconv.cli import build_parser, study_from_args
from actconv.run.execution import DataArgs
from actconv.train.seeding import set_threads
from actconv.train.loop import train_run

# Operator families, for the roll-up: what a faster kernel for each would be worth.
FAMILIES = {"convolution": ("conv",), "pooling": ("pool",), "linear": ("addmm", "mm", "linear"),
            "activation": ("elu", "relu", "gelu", "silu", "mish", "tanh", "sigmoid", "prelu", "softplus",
                           "clamp", "hardswish", "hardtanh", "softsign", "softshrink", "celu", "selu")}


def family(op: str) -> str:
    return next((f for f, keys in FAMILIES.items() if any(k in op for k in keys)), "other")


def profile_grid(flags: list[str]) -> dict:
    """Run the grid's loop-engine runs here under the profiler: seconds of runs and of each operator."""
    study = study_from_args(build_parser().parse_args(["run", "--out", "unused", *flags]))
    specs = [s for s in study.runs() if s.engine == "loop"]
    data = DataArgs(study.dataset, None, False, study.normalize).load()
    set_threads(1)
    train_run(specs[0], data)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_s = sum(train_run(s, data).wall_s for s in specs)
    ops = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    families = {}
    for op, t in ops.items():
        families[family(op)] = families.get(family(op), 0.0) + t
    return dict(runs=len(specs), run_s=run_s, ops=ops, families=families)


def describe(p: dict, top: int = 12) -> str:
    total = sum(p["ops"].values())
    lines = [f"{p['runs']} runs (loop engine), one thread, in one process: {p['run_s']:.1f} s",
             "by family: " + ", ".join(f"{f} {100 * t / total:.0f}%" for f, t in
                                       sorted(p["families"].items(), key=lambda kv: -kv[1]))]
    lines += [f"  {op:42s} {t:7.2f} s {100 * t / total:5.1f}%"
              for op, t in sorted(p["ops"].items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines)


def main(argv=None) -> int:
    print(describe(profile_grid(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
