#!/usr/bin/env python3
"""`make bench`: the same grids trained by the original notebook's loop and by actconv, side by side.

Prints, per grid, wall time, training samples per second and the ratio (the reference loop
is `../shared/bench/seed_style.py`, or $ACTCONV_REFERENCE, or --reference); which engine
is faster per model kind (what `--engine auto` picks); the model-FLOP utilisation of
training the original TinyVGG(64); peak memory; whether the two engines' final losses
differ over many seeds; and the seed preset's MLP part with diagnostics on either engine.
Every number is measured in this one command.
"""
import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # before torch: section (6)'s profiler chatter
sys.path.insert(0, str(Path(__file__).resolve().parent))  # op_profile, next to this script

import numpy as np  # noqa: E402
import op_profile  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from actconv.study import activations as acts  # noqa: E402
from actconv import run_study  # noqa: E402
from actconv.cli import build_parser, study_from_args  # noqa: E402
from actconv.study.config import ModelSpec, RunSpec  # noqa: E402
from actconv.run.store import load_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_ENV = "ACTCONV_REFERENCE"
DEFAULT_REFERENCE = ROOT.parent / "shared" / "bench" / "seed_style.py"
MB = 1024 * 1024


@dataclass(frozen=True)
class Grid:
    """One grid of runs, given to both programs with the same flags."""
    name: str
    model: str            # mlp (the original: activation on the logits) or tinyvgg
    hidden: int
    activations: str
    seeds: str
    n_train: str
    epochs: int
    target: float         # at least this many times faster than the reference

    def _cells(self) -> int:
        return len(acts.expand(self.activations.split(","))) * len(self.seeds.split(","))

    def runs(self) -> int:
        return self._cells() * len(self.n_train.split(","))

    def samples(self) -> int:
        """Training samples seen by the whole grid (each run: n_train x epochs)."""
        return self._cells() * sum(int(n) for n in self.n_train.split(",")) * self.epochs

    def common(self) -> list[str]:
        return ["--models", self.model, "--activations", self.activations, "--seeds", self.seeds,
                "--n-train", self.n_train, "--epochs", str(self.epochs)]

    def actconv_flags(self) -> list[str]:
        logits = ["--activate-logits"] if self.model == "mlp" else []
        return self.common() + ["--hidden-units", str(self.hidden)] + logits

    def reference_flags(self) -> list[str]:
        return self.common() + (["--mlp-hidden"] if self.model == "mlp" else ["--vgg-hidden"]) + [str(self.hidden)]


GRIDS = [
    Grid("bench-mlp", "mlp", 64, "common_activations", "42,451,101,1,2,3,4,5", "600,1200,2400", 5, 10.0),
    Grid("bench-vgg", "tinyvgg", 16, "common_activations", "42,451", "600,1200", 3, 2.5),
]
TINY_GRIDS = [  # seconds, for the test of this script
    Grid("bench-mlp", "mlp", 16, "relu,tanh", "1,2", "64", 1, 10.0),
    Grid("bench-vgg", "tinyvgg", 4, "relu", "1,2", "64", 1, 2.5),
]


# -- measuring a command: wall, CPU and memory of its whole process tree ------------------------
class TreeMemory:
    """Samples the memory of a process and its descendants from /proc until stopped.

    RSS counts shared pages (torch's libraries) once per process, so a sum of RSS overstates
    what a process tree holds. Its memory here is the private pages of every process plus
    the shared ones once (the largest shared set: all processes map the same libraries);
    unlike PSS, that does not shrink when other programs on the machine map the same files.
    smaps_rollup costs ~10 ms a process, so it is read less often than RSS.
    """

    def __init__(self, pid: int, every: float = 0.25, rollup_every: int = 2):
        self.pid, self.every, self.rollup_every = pid, every, rollup_every
        self.peak_rss = self.peak_tree = self.peak_pss = 0  # bytes: largest process; the tree two ways
        self.processes = 0  # in the tree when its memory peaked
        self.cpu_ticks = {}  # pid -> user + system clock ticks when last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
        return out

    @staticmethod
    def _fields(path: str) -> dict[str, int]:
        out = {}
        try:
            with open(path) as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if rest.strip().endswith("kB"):
                        out[key] = int(rest.split()[0]) * 1024
        except OSError:
            pass
        return out

    def _run(self):
        tick = 0
        while not self._stop.is_set():
            tree = self._tree()
            for p in tree:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    with open(f"/proc/{p}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    self.cpu_ticks[p] = int(fields[11]) + int(fields[12])
            self.peak_rss = max([self.peak_rss] + [self._fields(f"/proc/{p}/status").get("VmRSS", 0) for p in tree])
            if tick % self.rollup_every == 0:
                rollups = [self._fields(f"/proc/{p}/smaps_rollup") for p in tree]
                private = sum(r.get("Private_Clean", 0) + r.get("Private_Dirty", 0) for r in rollups)
                shared = max([r.get("Shared_Clean", 0) + r.get("Shared_Dirty", 0) for r in rollups] + [0])
                if private + shared > self.peak_tree:
                    self.peak_tree, self.processes = private + shared, len(tree)
                self.peak_pss = max(self.peak_pss, sum(r.get("Pss", 0) for r in rollups))
            tick += 1
            self._stop.wait(self.every)

    def stop(self):
        self._stop.set()
        self._thread.join()


@dataclass
class Timed:
    """What one command cost."""
    wall_s: float
    cpu_s: float          # user + system of the command and its processes (waited for, or sampled from /proc)
    peak_rss_mb: float    # the largest single process
    peak_mb: float        # the whole process tree: private pages of each, shared pages once
    peak_pss_mb: float    # the whole process tree's PSS (shares pages with other programs too)
    processes: int        # in the tree at its peak
    output: str


def run_timed(cmd: list[str], cwd=None) -> Timed:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    mem = TreeMemory(proc.pid)
    output = proc.communicate()[0]
    wall = time.perf_counter() - start
    mem.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"bench: command failed ({proc.returncode}): {' '.join(cmd)}\n{output[-3000:]}")
    # rusage counts only the children the command waited for: a process pool's workers are
    # children of its fork server, so their CPU is also summed from /proc as last sampled
    cpu = max((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
              sum(mem.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK"))
    return Timed(wall, cpu, mem.peak_rss / MB, mem.peak_tree / MB, mem.peak_pss / MB, mem.processes, output)


def import_floor(modules: str) -> tuple[float, float]:
    """RSS and private memory (MB) of a fresh interpreter that has only imported `modules`."""
    code = (f"import {modules}\nr = {{}}\nfor line in open('/proc/self/smaps_rollup'):\n"
            f"    k, _, v = line.partition(':')\n    r[k] = int(v.split()[0]) if v.strip().endswith('kB') else 0\n"
            f"print(r['Rss'], r['Private_Clean'] + r['Private_Dirty'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rss, private = (int(v) * 1024 / MB for v in out.split())
    return rss, private


def actconv_cmd(flags: list[str], out: Path, jobs: int) -> list[str]:
    return [sys.executable, "-m", "actconv.cli", "run", *flags, "--out", str(out), "--jobs", str(jobs), "--quiet"]


# -- (1) the grids, side by side ------------------------------------------------------------------
def side_by_side(grids, reference: Path, jobs: int, tmp: Path) -> list[dict]:
    rows = []
    for g in grids:
        ref = run_timed([sys.executable, str(reference), *g.reference_flags(), "--quiet",
                         "--json", str(tmp / f"{g.name}-reference.json")])
        with open(tmp / f"{g.name}-reference.json") as f:
            ref_runs = len(json.load(f)["runs"])
        ours = run_timed(actconv_cmd(g.actconv_flags(), tmp / g.name, jobs))
        runs = load_results(tmp / g.name).runs
        if ref_runs != g.runs() or len(runs) != g.runs() or not runs.status.isin(["done", "diverged"]).all():
            raise SystemExit(f"bench: {g.name}: expected {g.runs()} finished runs, reference ran {ref_runs}, "
                             f"actconv stored {runs.status.value_counts().to_dict()}")
        engines = ",".join(sorted(set(runs.engine)))
        for who, t in (("reference", ref), (f"actconv ({engines}, jobs {jobs})", ours)):
            rows.append(dict(grid=g.name, program=who, runs=g.runs(), samples=g.samples(), wall_s=t.wall_s,
                             samples_per_s=g.samples() / t.wall_s, cpu_s=t.cpu_s, peak_rss_mb=t.peak_rss_mb,
                             peak_mb=t.peak_mb))
        rows[-1]["ratio"] = ref.wall_s / ours.wall_s
        rows[-1]["target"] = g.target
        # What the runs themselves took, summed over workers: no scheduling or start-up can
        # beat that divided by the workers, so it bounds the ratio this machine allows.
        rows[-1]["run_s"] = float(runs.wall_s.sum())
        rows[-1]["ceiling"] = ref.wall_s / (rows[-1]["run_s"] / jobs)
        rows[-2]["ratio"] = 1.0
    return rows


# -- (2) which engine is faster, per model kind: what --engine auto picks -----------------------
def engine_choice(tiny: bool) -> list[dict]:
    """CPU time of one unit trained by each engine, one thread, in this process (best of 2)."""
    from actconv.study import data as datasets
    from actconv.study.config import resolve_engine
    from actconv.train.ensemble import train_ensemble
    from actconv.train.loop import train_run
    torch.set_num_threads(1)
    data = datasets.load("mnist-5k")
    cases = [("mlp", ModelSpec("mlp", 16 if tiny else 64, activate_logits=True), 8, 64 if tiny else 1200,
              1 if tiny else 5),
             ("tinyvgg", ModelSpec("tinyvgg", 4 if tiny else 16), 2, 64 if tiny else 600, 1)]
    rows = []
    for kind, ms, k, n, epochs in cases:
        specs = [RunSpec(model=kind, model_spec=ms, activation="relu", seed=s, n_train=n, epochs=epochs,
                         engine="ensemble") for s in range(k)]
        train_ensemble(specs[:2], data)  # warm-up: first calls allocate and pick kernels
        loop, ens = [], []
        for _ in range(2):
            t = time.process_time()
            for s in specs:
                train_run(RunSpec(**{**asdict(s), "model_spec": ms, "engine": "loop"}), data)
            loop.append(time.process_time() - t)
            t = time.process_time()
            train_ensemble(specs, data)
            ens.append(time.process_time() - t)
        rows.append(dict(model=f"{kind}({ms.hidden_units})", seeds=k, n_train=n, epochs=epochs,
                         loop_cpu_s=min(loop), ensemble_cpu_s=min(ens), ensemble_over_loop=min(ens) / min(loop),
                         faster=faster(min(loop), min(ens)),
                         auto=resolve_engine("auto", kind)))
    return rows


def faster(loop_s: float, ensemble_s: float, margin: float = 0.05) -> str:
    """Which engine won, or 'neither' within the margin (timings on a shared machine wobble that much)."""
    if abs(ensemble_s / loop_s - 1) <= margin:
        return "neither (5%)"
    return "ensemble" if ensemble_s < loop_s else "loop"


# -- (3) model-FLOP utilisation of training TinyVGG --------------------------------------------
# Operators that carry a TinyVGG step's FLOPs; everything else (activations, pooling, the
# optimizer, autograd bookkeeping) moves bytes without counted FLOPs.
FLOP_OPS = {"aten::mkldnn_convolution", "aten::convolution_backward", "aten::addmm", "aten::mm", "aten::bmm"}


def flop_utilisation(cases, repeats: int) -> list[dict]:
    """FLOPs of one loop training step (batch 32, channels_last as train.py) over a measured peak.

    cases: (hidden units, threads) pairs.
    """
    from torch.utils.flop_counter import FlopCounterMode

    import torch.nn.functional as F
    from actconv.study import data as datasets
    from actconv.train.loop import make_optimizer, prepare
    data = datasets.load("mnist-5k")
    a = torch.randn(2048, 2048)
    rows = []
    for hidden, threads in cases:
        spec = RunSpec(model="tinyvgg", model_spec=ModelSpec("tinyvgg", hidden), activation="relu", seed=0,
                       n_train=32, epochs=1, threads=threads)
        x, y, model = prepare(spec, data)  # sets the thread count too
        optimizer = make_optimizer(spec, model.parameters())

        def step():
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        step_wall, step_cpu = best_of(step, repeats)
        peak_wall, peak_cpu = best_of(lambda: a @ a, 5)
        matmul = 2 * 2048 ** 3
        share, op_time = flop_op_share(step)
        rows.append(dict(model=f"tinyvgg({hidden})", gflop_per_step=flops / 1e9, threads=torch.get_num_threads(),
                         step_ms_wall=step_wall * 1e3, step_ms_cpu=step_cpu * 1e3,
                         peak_gflops_wall=matmul / peak_wall / 1e9, peak_gflops_cpu=matmul / peak_cpu / 1e9,
                         mfu_wall=flops / step_wall / (matmul / peak_wall),
                         mfu_cpu=flops / step_cpu / (matmul / peak_cpu),
                         flop_op_share=share, flop_op_gflops=flops / op_time / 1e9))
    torch.set_num_threads(1)
    return rows


def flop_op_share(step, n: int = 3) -> tuple[float, float]:
    """Share of a step's operator time spent in FLOP-carrying operators, and that time per step (s)."""
    from torch.profiler import ProfilerActivity, profile
    saved = os.dup(2)
    try:  # the profiler's start-up chatter about GPUs goes to the C++ stderr
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                step()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    heavy = sum(e.self_cpu_time_total for e in events if e.key in FLOP_OPS)
    return heavy / total, heavy / n / 1e6


def best_of(f, n: int) -> tuple[float, float]:
    """Shortest wall and shortest CPU time of n calls (after one warm-up call)."""
    f()
    walls, cpus = [], []
    for _ in range(n):
        w, c = time.perf_counter(), time.process_time()
        f()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


# -- (4) the engines agree over many seeds ---------------------------------------------------------
def engines_agree(tiny: bool, n_seeds: int, jobs: int, tmp: Path) -> list[dict]:
    """Final train and test losses of loop and ensemble runs of the same grid, paired by run."""
    seeds = ",".join(str(s) for s in range(n_seeds))
    cases = ([("mlp", ["--models", "mlp", "--hidden-units", "16", "--activate-logits", "--activations",
                       "relu,tanh", "--n-train", "64", "--epochs", "1"]),
              ("tinyvgg", ["--models", "tinyvgg", "--hidden-units", "4", "--activations", "relu",
                           "--n-train", "64", "--epochs", "1"])] if tiny else
             [("mlp", ["--models", "mlp", "--hidden-units", "64", "--activate-logits", "--activations",
                       "common_activations", "--n-train", "600", "--epochs", "5"]),
              ("tinyvgg", ["--models", "tinyvgg", "--hidden-units", "16", "--activations", "relu,selu,tanh",
                           "--n-train", "600", "--epochs", "3"])])
    rows = []
    for kind, flags in cases:
        final = {}
        for engine in ("loop", "ensemble"):
            out = tmp / f"agree-{kind}-{engine}"
            args = build_parser().parse_args(["run", *flags, "--seeds", seeds, "--engine", engine, "--out", str(out)])
            run_study(study_from_args(args), out, jobs=jobs, progress=False)
            res = load_results(out)
            last = res.epochs.sort_values("epoch").groupby("run_id").tail(1).set_index(["activation", "seed"])
            status = res.runs.set_index(["activation", "seed"]).status
            final[engine] = (last, status)
        (lo, lo_status), (en, en_status) = final["loop"], final["ensemble"]
        both = sorted(k for k in lo_status.index if lo_status[k] == "done" and en_status.get(k) == "done")
        for metric in ("train_loss", "test_loss"):
            a, b = lo.loc[both, metric].to_numpy(), en.loc[both, metric].to_numpy()
            diff = b - a
            paired = 1.0 if not diff.any() else float(stats.ttest_rel(b, a).pvalue)
            welch = 1.0 if not diff.any() else float(stats.ttest_ind(b, a, equal_var=False).pvalue)
            rows.append(dict(model=kind, metric=f"final {metric}", pairs=len(both),
                             diverged_loop=int((lo_status == "diverged").sum()),
                             diverged_ensemble=int((en_status == "diverged").sum()),
                             mean_loop=float(a.mean()), mean_ensemble=float(b.mean()),
                             max_abs_diff=float(np.abs(diff).max()), paired_t_p=paired, welch_p=welch))
    return rows


# -- (7) diagnostics: the seed preset's MLP part on the loop and on the ensemble ---------------------
def diagnostics_engines(flags: list[str], jobs: int, tmp: Path) -> list[dict]:
    """The same command with `--engine loop` ("before": only the loop recorded diagnostics) and
    `--engine ensemble` ("after"): wall and CPU time, and that every run recorded diagnostics."""
    rows = []
    for engine, when in (("loop", "before"), ("ensemble", "after")):
        out = tmp / f"diagnostics-{engine}"
        t = run_timed(actconv_cmd([*flags, "--engine", engine], out, jobs))
        res = load_results(out)
        if set(res.runs.engine) != {engine} or set(res.diagnostics.run_id) != set(res.runs.run_id):
            raise SystemExit(f"bench: diagnostics on {engine}: expected every run on {engine} with diagnostics, "
                             f"got engines {sorted(set(res.runs.engine))}, {res.diagnostics.run_id.nunique()} "
                             f"of {len(res.runs)} runs with diagnostics")
        rows.append(dict(engine=engine, when=when, runs=len(res.runs), diagnostics_rows=len(res.diagnostics),
                         wall_s=t.wall_s, cpu_s=t.cpu_s, peak_mb=t.peak_mb))
    rows[1]["ratio"] = rows[0]["wall_s"] / rows[1]["wall_s"]
    return rows


# -- printing ---------------------------------------------------------------------------------------
def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """Columns: (key, header, format)."""
    cells = [[h for _, h, _ in cols]] + [[format(r[k], f) if k in r else "" for k, _, f in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in cells)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", default=os.environ.get(REFERENCE_ENV, str(DEFAULT_REFERENCE)),
                   help=f"the reference loop (default: ${REFERENCE_ENV} or {DEFAULT_REFERENCE})")
    p.add_argument("--grids", default=",".join(g.name for g in GRIDS), help="which grids to run")
    p.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="actconv worker processes")
    p.add_argument("--agree-seeds", type=int, default=10, help="seeds in the engines-agree comparison")
    p.add_argument("--seed-epochs", type=int, default=None,
                   help="measure the memory of the `seed` preset cut to this many epochs "
                        "(default: the whole preset; 0: skip)")
    p.add_argument("--seed-jobs", default=None,
                   help="--jobs values the seed preset runs with, comma-separated (default: --jobs)")
    p.add_argument("--diag-epochs", type=int, default=None,
                   help="(7) the seed preset's MLP part with diagnostics, loop against ensemble, cut to this "
                        "many epochs (default: the whole preset, 10 epochs; 0: skip)")
    p.add_argument("--no-profile", action="store_true", help="skip (6), the operator profile of the TinyVGG grid")
    p.add_argument("--tiny", action="store_true", help="tiny grids: seconds, to test this script")
    p.add_argument("--report-store", default=None,
                   help="(7) time `actconv report` on this store (default: the seed preset's store of (4))")
    p.add_argument("--json", help="also write every number here")
    args = p.parse_args(argv)
    reference = Path(args.reference)
    if not reference.exists():
        raise SystemExit(f"bench: reference loop not found at {reference}; pass --reference or set {REFERENCE_ENV}")
    names = args.grids.split(",") if args.grids else []
    grids = [g for g in (TINY_GRIDS if args.tiny else GRIDS) if g.name in names]
    report = dict(machine=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                               torch=torch.__version__, jobs=args.jobs, reference=str(reference),
                               reference_threads=f"torch default ({torch.get_num_threads()})"))
    print(f"actconv bench: {os.cpu_count()} cores, torch {torch.__version__}, actconv --jobs {args.jobs} "
          f"(1 thread each), reference {reference} (torch's default {torch.get_num_threads()} threads)")
    with tempfile.TemporaryDirectory(prefix="actconv-bench-") as tmp:
        tmp = Path(tmp)
        if grids:
            rows = side_by_side(grids, reference, args.jobs, tmp)
            report["grids"] = rows
            print("\n(1) the same grid, reference loop against actconv (wall time of the whole command)")
            print(table(rows, [("grid", "grid", "s"), ("program", "program", "s"), ("runs", "runs", "d"),
                               ("samples", "train samples", ",d"), ("wall_s", "wall s", ".1f"),
                               ("samples_per_s", "samples/s", ",.0f"), ("ratio", "ratio", ".2f"),
                               ("cpu_s", "cpu s", ".1f"), ("peak_mb", "peak MB", ".0f"),
                               ("peak_rss_mb", "largest RSS MB", ".0f")]))
            print("  peak MB: the whole command's processes, private pages of each plus shared pages once; "
                  "largest RSS: its largest process")
            for r in rows:
                if "target" in r:
                    print(f"  {r['grid']}: {r['ratio']:.2f}x faster, target >= {r['target']}x: "
                          f"{verdict(r['ratio'] >= r['target'])} (its runs alone took {r['run_s']:.1f} s of "
                          f"worker time: with no start-up and perfect balance over {args.jobs} workers, at most "
                          f"{r['ceiling']:.2f}x)")

        rows = engine_choice(args.tiny)
        report["engines"] = rows
        print("\n(2) engine per model kind: one unit, one thread, CPU time in this process (best of 2)")
        print(table(rows, [("model", "model", "s"), ("seeds", "seeds", "d"), ("n_train", "n_train", "d"),
                           ("epochs", "epochs", "d"), ("loop_cpu_s", "loop s", ".2f"),
                           ("ensemble_cpu_s", "ensemble s", ".2f"), ("ensemble_over_loop", "ensemble/loop", ".2f"),
                           ("faster", "faster", "s"), ("auto", "--engine auto", "s")]))

        rows = flop_utilisation([(64, 1)] if args.tiny else [(10, 1), (16, 1), (64, 1), (64, 2)],
                                2 if args.tiny else 10)
        report["mfu"] = rows
        print("\n(3) model-FLOP utilisation, one training step of batch 32 (FlopCounterMode FLOPs; peak = best "
              "of 5 2048x2048 float32 matmuls, same process and threads; best of the step's repeats)")
        print(table(rows, [("model", "model", "s"), ("gflop_per_step", "GFLOP/step", ".3f"),
                           ("threads", "threads", "d"), ("step_ms_wall", "step ms", ".1f"),
                           ("peak_gflops_wall", "peak GFLOP/s", ".1f"), ("mfu_wall", "MFU", ".0%"),
                           ("step_ms_cpu", "step ms (CPU)", ".1f"), ("peak_gflops_cpu", "peak (CPU)", ".1f"),
                           ("mfu_cpu", "MFU (CPU)", ".0%"), ("flop_op_share", "conv/matmul share", ".0%"),
                           ("flop_op_gflops", "their GFLOP/s", ".1f")]))
        big = next(r for r in rows if r["model"] == "tinyvgg(64)")
        print(f"  tinyvgg(64): MFU {big['mfu_wall']:.0%} by wall time, {big['mfu_cpu']:.0%} by CPU time (the same "
              f"ratio, with the time other processes held this core left out); target >= 75%: "
              f"{verdict(big['mfu_wall'] >= 0.75)} (wall), {verdict(big['mfu_cpu'] >= 0.75)} (CPU)")
        print("  above 100%: oneDNN's direct convolutions (brgemm) run faster than MKL's 2048x2048 sgemm, "
              "the peak measured here; small models: 'conv/matmul share' is the profiled share of the step "
              "in the operators that carry its FLOPs (the rest, activations, pooling and the optimizer, "
              "moves bytes), and 'their GFLOP/s' shows how well those use the core at that width")

        if args.seed_epochs != 0:
            flags = ["--preset", "smoke"] if args.tiny else ["--preset", "seed"]
            if args.seed_epochs and not args.tiny:
                flags += ["--epochs", str(args.seed_epochs)]
            floors = {"torch": "torch", "a driver": "actconv.cli, actconv.run.queue, actconv.run.store",
                      "a worker": "actconv.run.worker"}
            report["memory_floor"] = {name: dict(zip(("rss_mb", "private_mb"), import_floor(modules)))
                                      for name, modules in floors.items()}
            report["seed_preset"] = []
            print(f"\n(4) memory of `actconv run {' '.join(flags)}`: peak of all its processes (private pages "
                  f"of each, shared pages once), their PSS, and the largest process's RSS; target < 1536 MB")
            for jobs in [int(j) for j in (args.seed_jobs or str(args.jobs)).split(",")]:
                t = run_timed(actconv_cmd(flags, tmp / f"seed-preset-{jobs}", jobs))
                n = len(load_results(tmp / f"seed-preset-{jobs}").runs)
                report["seed_preset"].append(dict(flags=flags, jobs=jobs, runs=n, **{
                    k: v for k, v in asdict(t).items() if k != "output"}))
                print(f"  --jobs {jobs}: {n} runs in {t.wall_s:.0f} s, peak {t.peak_mb:.0f} MB in {t.processes} "
                      f"processes (PSS {t.peak_pss_mb:.0f} MB), largest RSS {t.peak_rss_mb:.0f} MB: "
                      f"{verdict(t.peak_mb < 1536)}")
            f = report["memory_floor"]
            print("  floor, a fresh interpreter after its imports (RSS, of it private): " + "; ".join(
                f"{name} {v['rss_mb']:.0f} MB ({v['private_mb']:.0f})" for name, v in f.items()))
            print("  --jobs 1 trains in the driver; --jobs N > 1 runs a driver that never imports torch, a fork "
                  "server that imported the worker's modules once, and N workers forked from it that share "
                  "those pages (plus multiprocessing's small resource tracker)")

        store = args.report_store or (args.seed_epochs != 0 and str(tmp / f"seed-preset-{report['seed_preset'][0]['jobs']}"))
        if store:  # (7) a separate section: the report's time and the page's weight
            t = run_timed([sys.executable, "-m", "actconv.cli", "report", store])
            page = Path(t.output.strip().splitlines()[-1])
            report["report"] = dict(store=store, wall_s=t.wall_s, cpu_s=t.cpu_s, page_mb=page.stat().st_size / MB)
            print(f"\n(7) `actconv report` on {store}: {t.wall_s:.1f} s ({t.cpu_s:.1f} s CPU), page "
                  f"{page.stat().st_size / MB:.1f} MB; target <= 30 s: {verdict(t.wall_s <= 30)}")

        rows = engines_agree(args.tiny, 3 if args.tiny else args.agree_seeds, args.jobs, tmp)
        report["agree"] = rows
        print(f"\n(5) loop against ensemble: final losses of the same runs over {3 if args.tiny else args.agree_seeds} "
              f"seeds (paired by activation and seed; runs that diverged under either engine left out)")
        print(table(rows, [("model", "model", "s"), ("metric", "metric", "s"), ("pairs", "pairs", "d"),
                           ("diverged_loop", "diverged loop", "d"), ("diverged_ensemble", "diverged ens", "d"),
                           ("mean_loop", "mean loop", ".5f"), ("mean_ensemble", "mean ens", ".5f"),
                           ("max_abs_diff", "max |diff|", ".1e"), ("paired_t_p", "paired t p", ".3f"),
                           ("welch_p", "Welch p", ".3f")]))
        worst = min(min(r["paired_t_p"], r["welch_p"]) for r in rows)
        print(f"  smallest p-value {worst:.3f}: {'no' if worst > 0.05 else 'a'} difference at the 5% level")
        vgg = next((g for g in (TINY_GRIDS if args.tiny else GRIDS) if g.model == "tinyvgg"), None)
        if vgg is not None and not args.no_profile:
            prof = op_profile.profile_grid(vgg.actconv_flags())
            report["profile"] = dict(grid=vgg.name, runs=prof["runs"], run_s=prof["run_s"],
                                     families=prof["families"], ops=prof["ops"])
            print(f"\n(6) where {vgg.name}'s time goes: its runs trained one after another in this process, "
                  f"under torch.profiler (self time per operator)")
            print(op_profile.describe(prof))
            print("  both programs run these same torch kernels; actconv's measures (data on the device, "
                  "channels_last, no per-step sync) act on the rest")
        if args.diag_epochs != 0:
            flags = ["--preset", "smoke" if args.tiny else "seed", "--models", "mlp_original,mlp", "--diagnostics"]
            if args.diag_epochs and not args.tiny:
                flags += ["--epochs", str(args.diag_epochs)]
            rows = diagnostics_engines(flags, args.jobs, tmp)
            report["diagnostics_engines"] = dict(flags=flags, jobs=args.jobs, rows=rows)
            print(f"\n(7) diagnostics on both engines: `actconv run {' '.join(flags)} --engine loop|ensemble "
                  f"--jobs {args.jobs}` (before: only the loop recorded diagnostics, so `auto` picked it)")
            print(table(rows, [("when", "", "s"), ("engine", "engine", "s"), ("runs", "runs", "d"),
                               ("diagnostics_rows", "diagnostics rows", ",d"), ("wall_s", "wall s", ".1f"),
                               ("cpu_s", "cpu s", ".1f"), ("peak_mb", "peak MB", ".0f"),
                               ("ratio", "loop/ensemble", ".2f")]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
