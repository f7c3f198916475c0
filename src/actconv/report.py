"""The only writer of report files: a self-contained HTML report, its figures, CSV tables, exports."""
import base64
import datetime
import gc
import html
import io
import multiprocessing
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd

from . import analysis, answers, claims, conditions, diagnostics, learning, plots, recorder, robustness, tuning
from .activations import FAMILIES, use_stored_activations
from .errors import ActconvError
from .store import n_classes_of
from .export import export  # noqa: F401  (it lived here; export.py now holds every format)
from .tables import CONFIG_KEYS, flag, fmt

STATUSES = ("done", "diverged", "failed", "running", "pending")
# What the summary aggregates across seeds, in the order a reader wants them.
SUMMARY_METRICS = ["start_loss", "final_train_loss", "final_test_loss", "final_train_accuracy",
                   "final_test_accuracy", "gap", "auc_train_loss", "auc_test_loss",
                   "steps_to_threshold", "reached"]


def write_report(out_dir, results=None, *, spike_k: float = 10.0, spike_window: int = 50,
                 threshold: float = 0.5, dpi: int = 100, jobs: int | None = None,
                 select: str = "val_loss", tune=("lr",), reference_lr: float | None = None) -> Path:
    """Write OUT/report/index.html, figures/*.png and *.svg, summary.csv and the analysis tables.

    Figures are drawn and saved in parallel processes (one per core this process may use).

    Args:
        out_dir: the study's output directory (holds the results store; the report goes
            into its `report/` folder).
        results: the long tables (`actconv.load_results(out_dir)` when None).
        spike_k, spike_window: a spike is a batch loss above median + k x MAD of the
            previous `spike_window` losses.
        threshold: loss for steps-to-threshold.
        dpi: resolution of the PNG figures (and of the line art rasterised in the SVGs).
        jobs: processes that draw the figures (default: the cores this process may use).
        select: the validation metric tuning chooses on (val_loss or val_accuracy).
        tune: the training settings tuned per activation (those that vary in the study).
        reference_lr: the fixed setting of the unfair comparison (default: the study's
            `reference_lr`, the notebook's 0.1).
    Returns:
        The path of index.html. Works on a study that is still running or partly failed.
    """
    out_dir = Path(out_dir)
    if results is None:
        from .store import load_results
        results = load_results(out_dir)
    if select not in tuning.SELECT:
        raise ActconvError(f"unknown selection metric {select!r}; choose from: {', '.join(tuning.SELECT)}")
    bad = [a for a in tune if a not in tuning.TUNABLE]
    if bad:
        raise ActconvError(f"cannot tune {bad[0]!r}; choose from: {', '.join(tuning.TUNABLE)}")
    use_stored_activations(results.runs)  # a user's activations: their ranges and plots here too
    everything = conditions.separate_conditions(results)  # perturbed siblings included
    results = robustness.originals(everything)
    thresholds = claims.Thresholds(spike_k=spike_k, spike_window=spike_window, select=select,
                                   tuned_axes=tuple(tune),
                                   reference=(("lr", reference_lr or _reference_lr(out_dir)),))
    dest = out_dir / "report"
    figdir = dest / "figures"
    try:
        figdir.mkdir(parents=True, exist_ok=True)
        for old in figdir.glob("*"):  # figures of an earlier report may no longer apply
            if old.suffix in (".png", ".svg"):
                old.unlink()
    except OSError as e:
        raise ActconvError(f"cannot write the report into {dest}: {e.strerror}") from None

    # Figures are drawn in worker processes while this process goes on: first the longest,
    # which need only the stored tables, then those drawn from the curve tables while the
    # claims are judged and the questions answered, and last the questions' few figures.
    with _FigureWriter(figdir, dpi, jobs or _cores()) as writer:
        epochs = _done_epochs(results)
        writer.submit(_diagnostics_figures(results, epochs))
        t = _curve_tables(results, epochs, spike_k, spike_window, threshold)
        writer.submit(_figures(results, t))
        t.update(_claim_tables(results, t, thresholds))
        t.update(_questions(everything, results, t, thresholds))
        writer.submit(_question_figures(t))
        inside, curves, questions = writer.results()
    written = curves + inside + questions  # the page's order
    _write_tables(t, dest)
    page = _html(out_dir, results, t, written, spike_k, spike_window, threshold)
    index = dest / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


# -- analysis ------------------------------------------------------------------------------------

def _done_epochs(results) -> pd.DataFrame:
    """The epoch rows of the runs that finished without diverging."""
    runs = results.runs
    return results.epochs[results.epochs["run_id"].isin(runs.loc[runs["status"] == "done", "run_id"])]


def _curve_tables(results, epochs, spike_k, spike_window, threshold) -> dict:
    """The per-run metrics, curves, fits and spikes: what the figures are drawn from."""
    runs = results.runs
    status = runs.set_index("run_id")["status"] if len(runs) else pd.Series(dtype=str)
    done = status.index[status == "done"]
    finished = status.index[status.isin(["done", "diverged"])]
    batches = results.batches[results.batches["run_id"].isin(done)]
    # Batch figures also show diverged runs: their explosion is what a reader looks for.
    spiky = results.batches[results.batches["run_id"].isin(finished)]
    t = {"epochs": epochs, "batches": batches, "finished_batches": spiky}
    if len(spiky):  # once for the batch figures (diverged runs too) and the done runs' table
        t["finished_fits"] = analysis.batch_fit(results.epochs, spiky)
    if len(epochs):
        t["per_run"] = analysis.run_metrics(epochs, batches if len(batches) else None,
                                            threshold=threshold)
        t["fits"] = analysis.epoch_fits(epochs)
        t["curves"] = analysis.curve_intervals(epochs, ["train_loss", "test_loss", "train_accuracy",
                                                        "test_accuracy"])
    if len(batches):
        fits = t["finished_fits"]
        t["batch_fits"] = fits[fits["run_id"].isin(done)].reset_index(drop=True)
    t["spikes"] = (analysis.detect_spikes(spiky, results.epochs, k=spike_k, window=spike_window)
                   if len(spiky) else pd.DataFrame(columns=analysis.SPIKE_COLUMNS))
    return t


def _claim_tables(results, t, thresholds) -> dict:
    """The ranking, the paired tests and every claim's verdicts."""
    out = {}
    if "per_run" in t:
        metrics = [m for m in SUMMARY_METRICS if m in t["per_run"].columns]
        out["summary"] = analysis.aggregate(t["per_run"], metrics)
        out["ranking"] = analysis.rank_activations(t["per_run"], "final_test_loss")
        out["paired"] = analysis.paired_comparisons(t["per_run"], "final_test_loss")
    for name, ids in (("findings", claims.ORIGINAL), ("mechanisms", claims.MECHANISMS),
                      ("papers", claims.PAPERS), ("samples", claims.SAMPLES),
                      ("fairness", claims.FAIRNESS)):
        out[name] = claims.evaluate(results, ids, thresholds)
    return out


def _reference_lr(out_dir: Path) -> float:
    """The study's `reference_lr` as registered in the store (0.1, the notebook's, by default)."""
    from .errors import StoreError
    from .store import study_specs
    try:
        specs = study_specs(out_dir)
    except StoreError:  # results given without a store of their own
        return tuning.REFERENCE["lr"]
    values = {float(s["reference_lr"]) for s in specs if s.get("reference_lr")}
    return values.pop() if len(values) == 1 else tuning.REFERENCE["lr"]


def _questions(everything, results, t, th) -> dict:
    """The fairness, sample-size and robustness tables (and the answers built on all tables)."""
    out = {}
    runs = results.runs
    finished = runs[runs["status"].isin(["done", "diverged"])] if len(runs) else runs
    if len(finished) and "config_json" in finished:
        per_run = tuning.final_metrics(finished, results.epochs)
        axes = [a for a in th.tuned_axes if a in per_run and per_run[a].astype(str).nunique() > 1]
        if axes and per_run["final_val_loss"].notna().any():
            out["candidates"] = tuning.candidates(per_run, axes, th.select)
            out["tuned"] = tuning.tune(per_run, axes, th.select, confidence=th.confidence)
            out["reference_ranking"] = tuning.at_reference(per_run, dict(th.reference), axes=axes)
            out["ranking_shift"] = tuning.ranking_shift(out["reference_ranking"], out["tuned"],
                                                        places=th.rank_places)
            chance = 1.0 / n_classes_of(runs)
            out["stability"] = tuning.stability(per_run, out["tuned"], axes, chance=chance)
            out["tuning_axes"] = axes
            out["claims_reference_tuned"] = _claims_side_by_side(results, per_run, out["tuned"], axes, th)
    if "per_run" in t and len(t["per_run"]):
        lc = learning.learning_curves(t["per_run"])
        if len(lc):
            out["learning_curves"] = lc
    if robustness.replica_sets(everything):
        out["robustness"] = robustness.verdict_robustness(
            everything, lambda r: claims.evaluate(r, claims.ORIGINAL + claims.SAMPLES, th))
        out["recurrence"] = robustness.event_recurrence(everything, spike_k=th.spike_k,
                                                        spike_window=th.spike_window)
        out["perturbation_variance"] = robustness.perturbation_variance(everything)
    out["answers"] = answers.answers({**t, **out})
    return out


def _claims_side_by_side(results, per_run, tuned, axes, th) -> pd.DataFrame:
    """The notebook's claims judged at the reference setting and with each activation at its
    tuned value, one row per (claim, scope)."""
    label = tuning.fixed_label(per_run, axes)
    ref = tuning.at_reference(per_run, dict(th.reference), axes=axes)
    keep = per_run.assign(condition=label)
    for a, v in th.reference:
        keep = keep[np.isclose(keep[a].astype(float), float(v))] if a in keep else keep.iloc[0:0]
    views = {"reference": dict(zip(keep["run_id"], keep["condition"])) if len(ref) else {},
             "tuned": tuning.tuned_runs(per_run, tuned, axes).to_dict()}
    tables = []
    for name, mapping in views.items():
        if not mapping:
            continue
        view = _view(results, mapping)
        v = claims.evaluate(view, claims.ORIGINAL, th)[["id", "claim", "scope", "verdict", "evidence"]]
        tables.append(v.rename(columns={"verdict": f"verdict_{name}", "evidence": f"evidence_{name}"}))
    if not tables:
        return pd.DataFrame()
    out = tables[0]
    for other in tables[1:]:
        out = out.merge(other, on=["id", "claim", "scope"], how="outer")
    return out


def _view(results, mapping: dict):
    """Results of the runs in `mapping` (run_id -> condition label) with `model` relabelled."""
    import dataclasses
    ids = set(mapping)

    def keep(table):
        table = table[table["run_id"].isin(ids)]
        return table.assign(model=table["run_id"].map(mapping)) if "model" in table else table

    return dataclasses.replace(results, runs=keep(results.runs), epochs=keep(results.epochs),
                               batches=keep(results.batches), diagnostics=keep(results.diagnostics))


# -- figures --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FigureJob:
    """One figure of the page: where it goes, what it says, and how to draw it."""
    section: str
    slug: str
    caption: str
    draw: Callable  # () -> Figure; called in a worker process, so only its picture travels back


def _figures(results, t) -> list:
    """A FigureJob for everything the data allows."""
    out = []
    epochs, batches = t["epochs"], t["finished_batches"]
    start = (results.epochs[results.epochs["run_id"].isin(batches["run_id"].unique())]
             if len(batches) else epochs)
    if epochs.empty and batches.empty:
        return out
    models = sorted(epochs["model"].unique())
    logits = _activated_logits(results.runs)
    ci = t.get("curves")
    for model in sorted(set(epochs["model"]) | set(batches["model"])):
        e = epochs[epochs["model"] == model]
        b = batches[batches["model"] == model]
        in_e, in_b = set(e["activation"].unique()), set(b["activation"].unique())
        known = {a for members in FAMILIES.values() for a in members}
        own = sorted((in_e | in_b) - known)  # parametric spellings and a user's activations
        for family, members in {**FAMILIES, **({"your_activations": own} if own else {})}.items():
            present = [a for a in members if a in in_e]
            in_batches = [a for a in members if a in in_b]
            name = family.replace("_", " ")
            if in_batches:
                out.append(FigureJob("The original's figures, per activation family", f"{model}-{family}-batch",
                                     f"{model}, {name}: batch loss against batch update with the "
                                     f"least-squares line through it (epoch-0 loss at update 0), as the "
                                     f"original drew it; one seed, diverged runs included.",
                                     partial(plots.family_batch_losses, b, start, in_batches, model=model,
                                             fits=t["finished_fits"])))
            if not present:
                continue
            out.append(FigureJob("The original's figures, per activation family", f"{model}-{family}-test",
                                 f"{model}, {name}: test loss and accuracy against epoch, mean over seeds "
                                 f"with a 95% band.",
                                 partial(plots.family_test_curves, e, present, model=model, ci=ci)))
    for model in models:
        e = epochs[epochs["model"] == model]
        out.append(FigureJob("Loss and accuracy per model and training-set size", f"{model}-loss",
                             f"{model}: train and test loss per epoch, one row per training-set size.",
                             partial(plots.epoch_loss_curves, e, model=model, ci=ci)))
        out.append(FigureJob("Loss and accuracy per model and training-set size", f"{model}-accuracy",
                             f"{model}: train and test accuracy per epoch, one row per training-set size.",
                             partial(plots.accuracy_curves, e, model=model, ci=ci)))
        out.append(FigureJob("Regression lines over the epoch losses", f"{model}-regression",
                             f"{model}: epoch losses and their least-squares lines, one row per "
                             f"training-set size (slopes in the fits table).",
                             partial(plots.epoch_regression, e, t["fits"], model=model)))
    if len(batches):
        for model in sorted(batches["model"].unique()):
            n, seed, note = _dynamics_run(batches, t["spikes"], model)
            out.append(FigureJob("Batch-loss dynamics and spikes", f"{model}-dynamics",
                                 f"{model}: batch loss of {note}, whole run and first epoch; spikes marked.",
                                 partial(plots.batch_dynamics, batches[batches["model"] == model],
                                         t["spikes"], model=model, n_train=n, seed=seed)))
    for model in models:
        out.append(FigureJob("Final and starting losses", f"{model}-heatmap",
                             f"{model}: final test loss, mean over seeds, per activation and training-set "
                             f"size (best on top).", partial(plots.final_loss_heatmap, t["per_run"], model=model)))
        out.append(FigureJob("Final and starting losses", f"{model}-start-final",
                             f"{model}: starting (epoch-0) train loss against final test loss.",
                             partial(plots.start_vs_final, t["per_run"], model=model,
                                     logit_floors=model in logits)))
    return out


TUNING = "Learning-rate sensitivity"
LEARNING = "Learning curves in n"


def _question_figures(t) -> list:
    """The sensitivity of each activation to the tuned setting, and the learning-curve fits."""
    out = []
    cand = t.get("candidates")
    if cand is not None and len(cand) and len(t.get("tuning_axes", [])) == 1:
        axis = t["tuning_axes"][0]
        if pd.api.types.is_numeric_dtype(cand[axis]):
            select = [c for c in ("val_loss", "val_accuracy") if c in cand][0]
            for cond in sorted(cand["condition"].unique()):
                out.append(FigureJob(TUNING, f"{cond}-sensitivity",
                                     f"{cond}: final {select.replace('_', ' ')} against {axis} per "
                                     f"activation (log axis), one panel per training-set size; the "
                                     f"ringed point is each activation's choice; a gap is a value at "
                                     f"which a seed diverged or ended above its start (never chosen).",
                                     partial(plots.lr_sensitivity, cand, condition=cond, axis=axis,
                                             select=select)))
    lc = t.get("learning_curves")
    if lc is not None and len(lc):
        for model in sorted(lc["model"].unique()):
            out.append(FigureJob(LEARNING, f"{model}-learning-curves",
                                 f"{model}: final test loss against n_train (log-log), per-seed points, "
                                 f"the mean with its 95% interval and each activation's power-law fit.",
                                 partial(plots.learning_curve_fits, t["per_run"], lc, model=model)))
    return out


GALLERY = "Activation functions and where they saturate"
DYNAMICS = "Inside the networks: per-layer diagnostics"


def _diagnostics_figures(results, epochs) -> list:
    """The activation gallery (shown at the top), the logit floor, and per-layer figures."""
    runs = results.runs[results.runs["run_id"].isin(epochs["run_id"].unique())]
    present = [a for a in plots.STYLES if a in set(runs["activation"])]
    present += sorted(use_stored_activations(runs) - set(present))  # parametric and the user's
    out = [FigureJob(GALLERY, "activation-gallery", "Each activation of this study (colour) and its "
                     "derivative (black, dashed) over [-5, 5]; grey where the derivative is below 1% of "
                     "its maximum, which is what the saturation figures count.",
                     partial(plots.activation_gallery, present))]
    bounded = runs["activation"].isin(list(analysis.BOUNDED_RANGE))
    on_logits = flag(runs, "activate_logits")
    if (bounded & on_logits & (runs["model_kind"] == "mlp")).any():
        out.append(FigureJob(DYNAMICS, "logit-floor", "Bounded activations on the logits (left) cannot go "
                             "below the floor their logit range allows; with linear logits (right) they can.",
                             partial(plots.logit_floor_curves, epochs, runs)))
    diag = results.diagnostics[results.diagnostics["run_id"].isin(runs["run_id"])]
    for model in sorted(runs.loc[runs["run_id"].isin(diag["run_id"].unique()), "model"].unique()):
        r = runs[(runs["model"] == model) & runs["run_id"].isin(diag["run_id"].unique())]
        n = int(r["n_train"].max())
        # Each worker gets the rows of its own figure: one model and size, or one run.
        d = diag[diag["run_id"].isin(r.loc[r["n_train"] == n, "run_id"])]
        out.append(FigureJob(DYNAMICS, f"{model}-layer-stats", f"{model}, {n} images: activation mean ± "
                             f"standard deviation per hidden layer on the {recorder.PROBE_SIZE['mlp']}-image "
                             f"probe batch ({recorder.PROBE_SIZE['tinyvgg']} for TinyVGG) after each epoch, "
                             f"averaged over seeds, as Glorot & Bengio plotted them.",
                             partial(plots.layer_activation_stats, d, r, model=model, n_train=n)))
        out.append(FigureJob(DYNAMICS, f"{model}-gradients", f"{model}, {n} images: weight-gradient norm "
                             f"per layer (log axis) and the first/last layer ratio, median over seeds.",
                             partial(plots.gradient_norms, d, r, model=model, n_train=n)))
        out.append(FigureJob(DYNAMICS, f"{model}-saturation", f"{model}, {n} images: saturated entries and "
                             f"dead units per activation.",
                             partial(plots.saturation_dead_units, d, r, model=model, n_train=n)))
        pick = r[r["n_train"] == n].sort_values("seed")
        pick = pick[pick["activation"] == "sigmoid"] if pick["activation"].eq("sigmoid").any() else pick
        run = pick.iloc[0]
        out.append(FigureJob(DYNAMICS, f"{model}-histograms", f"{model}: pre-activation histograms of one "
                             f"run ({run['activation']}, seed {run['seed']}, {n} images) over training.",
                             partial(plots.preact_histograms, diag[diag["run_id"] == run["run_id"]], r,
                                     run["run_id"])))
    return out


def _activated_logits(runs: pd.DataFrame) -> set:
    if "activate_logits" not in runs.columns:
        return set()
    return set(runs.loc[flag(runs, "activate_logits"), "model"])


def _dynamics_run(batches, spikes, model):
    """The run to show: the (n_train, seed) with the highest spike, else the smallest and first."""
    s = spikes[spikes["model"] == model] if len(spikes) else spikes
    s = s[s["run_id"].isin(batches["run_id"].unique())] if len(s) else s  # unique: isin converts each value
    if len(s):
        top = s.sort_values("loss", ascending=False).iloc[0]
        return int(top["n_train"]), int(top["seed"]), (f"n_train {int(top['n_train'])}, seed "
                                                       f"{int(top['seed'])} (the highest spike)")
    b = batches[batches["model"] == model]
    n, seed = int(b["n_train"].min()), int(b["seed"].min())
    return n, seed, f"n_train {n}, seed {seed} (no spikes in this model)"


# The figures a forked worker draws, per batch: inherited from the parent at fork, so only
# an index goes to the worker and only the picture comes back (no DataFrame is pickled).
_JOBS: dict = {}


class _FigureWriter:
    """Draws and saves figures as PNG and SVG in forked worker processes while the caller
    goes on; `results()` gives (section, stem, caption, PNG) in the order submitted."""

    def __init__(self, figdir: Path, dpi: int, jobs: int):
        self.figdir, self.dpi, self.jobs = figdir, dpi, jobs
        self.used, self.batches, self.pools = set(), [], []

    def __enter__(self):
        if self.jobs > 1:
            _warm_up()
        return self

    def __exit__(self, *exc):
        for pool in self.pools:
            pool.terminate()  # the results are in (or an error stops the report)
            pool.join()
        _JOBS.clear()
        gc.unfreeze()

    def submit(self, figures) -> None:
        """Start drawing `figures`: in a pool forked now, so its workers see the data as it is."""
        stems = [_slug(f.slug, self.used) for f in figures]
        jobs = [(f.draw, self.figdir / stem, self.dpi) for f, stem in zip(figures, stems)]
        pending = {}
        # The loaded tables are long-lived: out of the collector's sight, its passes while
        # figures are built no longer walk them (a fifth of building the figures), and a
        # forked worker's passes no longer touch (and so copy) the parent's pages.
        gc.freeze()
        if min(self.jobs, len(jobs)) > 1 and "fork" in multiprocessing.get_all_start_methods():
            batch = len(self.batches)
            _JOBS[batch] = jobs  # set before the fork: the workers inherit them
            pool = multiprocessing.get_context("fork").Pool(min(self.jobs, len(jobs)))
            self.pools.append(pool)
            pending = {i: pool.apply_async(_render_job, (batch, i)) for i in range(len(jobs))}
        self.batches.append([(f.section, stem, f.caption, pending.get(i) or _render_call(*jobs[i]))
                             for i, (f, stem) in enumerate(zip(figures, stems))])

    def results(self) -> list:
        """Per batch submitted, its figures as (section, stem, caption, PNG bytes)."""
        return [[(section, stem, caption, png if isinstance(png, bytes) else png.get())
                 for section, stem, caption, png in batch] for batch in self.batches]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def _warm_up() -> None:
    """Load the fonts and fill matplotlib's text caches once, before the workers fork: each
    worker would otherwise fill them again (a fifth of their time on the seed preset)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(3, 2), layout="constrained")
    ax = fig.subplots()
    ax.semilogy([0, 1], [0.01, 100], marker="o", label="warm")
    ax.fill_between([0, 1], [0.1, 1], [1, 10], alpha=0.2)
    ax.errorbar([0.5], [1.0], yerr=[0.5])
    fig.colorbar(ax.imshow([[1.0, 2.0]], extent=(0, 1, 1, 2)), ax=ax)
    ax.set(title="t", xlabel="x", ylabel="y")
    fig.legend(loc="outside right")
    fig.suptitle("s")
    _png(fig, 50)
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(io.BytesIO(), format="svg")


def _render_job(batch: int, i: int) -> bytes:
    return _render_call(*_JOBS[batch][i])


def _render_call(draw, path: Path, dpi: int) -> bytes:
    # Titles at a fixed height: placing them by the ticks above (there are none) asked each
    # axis its extent once more per draw, an eighth of the drawing time; the pixels are equal.
    with matplotlib.rc_context({"axes.titley": 1.0}):
        fig = draw()
    return _render(fig, path, dpi)


def _render(fig, path: Path, dpi: int) -> bytes:
    """Save `fig` as path.png and path.svg; return the PNG's bytes."""
    png = _png(fig, dpi)
    (path.parent / f"{path.name}.png").write_bytes(png)  # a user's model name may hold a dot
    # The layout is solved for the PNG already; solving it again for the SVG would cost a
    # third of the figure's time and give the same positions. No engine at all, not "none":
    # savefig draws a figure that has any engine (a placeholder too) twice.
    with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)
    # Text as text (not glyph outlines): an eighth faster to write, and searchable and
    # editable in the SVG; dpi is that of the rasterised line art.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(path.parent / f"{path.name}.svg", format="svg", dpi=dpi)
    return png


def _png(fig, dpi: int) -> bytes:
    """The figure as a PNG of at most 256 colours: a quarter of the bytes of a full-colour one.

    Line art has few colours, so a palette loses nothing visible. It is cut by the fast octree
    (a twelfth of median cut's time, which was a tenth of a figure's) with the background's
    bucket set back to the background's colour, which the bucket's average had tinted. Figures
    holding an image or a colour bar (smooth gradients) keep median cut: the octree bands them.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(physical=True),
                             canvas.buffer_rgba()).convert("RGB")
    if _gradients(fig):
        image = image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    else:
        background = image.getpixel((0, 0))
        image = image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        palette, k = image.getpalette(), image.getpixel((0, 0))
        palette[3 * k:3 * k + 3] = background
        image.putpalette(palette)
    buf = io.BytesIO()
    image.save(buf, format="png", compress_level=6)
    return buf.getvalue()


def _gradients(fig) -> bool:
    """Whether `fig` holds an image or a colour mesh (a heat map, a colour bar)."""
    from matplotlib.collections import QuadMesh
    return any(ax.images or any(isinstance(c, QuadMesh) for c in ax.collections) for ax in fig.axes)


def _slug(text: str, used: set) -> str:
    """A file name from a label a user chose: only safe characters, never a repeat."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "figure"
    stem, k = base, 2
    while stem in used:
        stem, k = f"{base}-{k}", k + 1
    used.add(stem)
    return stem


def _write_tables(t, dest: Path) -> None:
    empty = pd.DataFrame(columns=CONFIG_KEYS + ["metric", "n_seeds", "mean", "sd", "low",
                                                         "high", "method", "note"])
    t.get("summary", empty).to_csv(dest / "summary.csv", index=False)
    for name in ("per_run", "fits", "batch_fits", "ranking", "paired", "spikes", "findings",
                 "mechanisms", "papers", "samples", "fairness", "tuned", "candidates",
                 "reference_ranking", "ranking_shift", "stability", "claims_reference_tuned",
                 "learning_curves", "robustness", "recurrence", "perturbation_variance"):
        if name in t:
            t[name].to_csv(dest / f"{name}.csv", index=False)


# -- HTML -----------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:1rem 2rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;vertical-align:top;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:600;white-space:nowrap;padding:.1rem .4rem;border-radius:3px}
.supported{background:#d9f0e3;color:#0b5a2c} .not-supported{background:#f8dcdc;color:#7a1010}
.inconclusive{background:#eee;color:#444}
.reproduced{background:#d9f0e3;color:#0b5a2c} .not-reproduced{background:#f8dcdc;color:#7a1010}
figure{margin:1.2rem 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9rem;color:#444} .meta{color:#555;font-size:.9rem}
details{margin:.6rem 0} summary{cursor:pointer;font-weight:600}
.scroll{max-height:28rem;overflow:auto}
code{background:#f5f5f5;padding:0 .2rem;overflow-wrap:anywhere} .wide{overflow-x:auto}
"""


def _html(out_dir, results, t, figures, spike_k, spike_window, threshold) -> str:
    runs = results.runs
    studies = sorted(map(str, runs["study"].dropna().unique())) if "study" in runs.columns else []
    title = "actconv report: " + (", ".join(studies) if studies else "unnamed study")
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f"<p class='meta'>Results in <code>{_e(Path(out_dir).resolve())}</code>; written "
             f"{_e(now)}. Figures and tables are also in <code>figures/</code> and the CSV files "
             f"next to this page.</p>"]
    parts += _answers_section(t)  # the report opens with what the study says
    top = [_figure_html(*f[1:]) for f in figures if f[0] == GALLERY]  # where each one saturates
    parts += [f"<h2 id='gallery'>{_e(GALLERY)}</h2>"] + top if top else []
    figures = [f for f in figures if f[0] != GALLERY]
    parts += _status_section(runs)
    parts += _config_section(runs)
    parts += _verdict_table("papers", "Published claims, checked", PAPERS_INTRO, t.get("papers"),
                            claims.labels(claims.PAPERS))
    parts += _verdict_table("findings", "The original findings, checked", FINDINGS_INTRO, t["findings"])
    parts += _verdict_table("mechanisms", "Mechanisms, measured", MECHANISMS_INTRO, t.get("mechanisms"))
    parts += _verdict_table("claims-samples", "Does the comparison change with n?", SAMPLES_INTRO,
                            t.get("samples"))
    parts += _verdict_table("claims-fairness", "Does the comparison survive tuning?", FAIRNESS_INTRO,
                            t.get("fairness"))
    parts += _ranking_section(t)
    parts += _tuning_section(t)
    parts += _learning_section(t)
    parts += _robustness_section(t)
    first = {}
    for sec, *_ in figures:
        first.setdefault(sec, len(first))
    section = None
    for sec, stem, caption, png in sorted(figures, key=lambda f: first[f[0]]):  # a section once
        if sec != section:
            parts.append(f"<h2>{_e(sec)}</h2>")
            section = sec
        parts.append(_figure_html(stem, caption, png))
    if not figures:
        parts.append("<h2>Figures</h2><p>No finished runs yet: nothing to draw.</p>")
    parts += _tables_section(t, threshold)
    parts += _method_section(spike_k, spike_window, threshold)
    parts.append("</body></html>")
    return "\n".join(parts)


def _status_section(runs: pd.DataFrame) -> list:
    counts = runs["status"].value_counts() if len(runs) else pd.Series(dtype=int)
    total = int(counts.sum())
    done = int(counts.get("done", 0))
    missing = int(counts.get("pending", 0) + counts.get("running", 0))
    out = ["<h2 id='status'>Runs</h2>",
           f"<p>{total} runs registered: " + ", ".join(
               f"{int(counts.get(s, 0))} {s}" for s in STATUSES) + ".</p>"]
    if total == 0:
        out.append("<p>No runs in this store.</p>")
        return out
    if missing:
        out.append(f"<p><strong>{missing} runs are not finished</strong> (pending or running): the "
                   f"statistics below use the {done} finished runs only and will change.</p>")
    others = sorted(set(counts.index) - set(STATUSES))
    if others:
        out.append(f"<p>Unknown statuses: {_e(', '.join(map(str, others)))}.</p>")
    by_model = runs.pivot_table(index="model", columns="status", values="run_id", aggfunc="count",
                                fill_value=0)
    by_model = by_model.reindex(columns=[s for s in STATUSES if s in by_model.columns] + others)
    out.append(_table(by_model.reset_index()))
    cols = ["run_id", "model", "activation", "seed", "n_train"]
    failed = runs[runs["status"] == "failed"]
    if len(failed):
        out.append(f"<details open><summary>{len(failed)} failed run(s)</summary>"
                   + _table(failed[cols + ["error"]].head(200)) + "</details>")
    diverged = runs[runs["status"] == "diverged"]
    if len(diverged):
        out.append(f"<details open><summary>{len(diverged)} diverged run(s) (a non-finite loss "
                   f"stopped them)</summary>" + _table(diverged[cols + ["diverged_step"]].head(200))
                   + "</details>")
    pending = runs[runs["status"].isin(["pending", "running"])]
    if len(pending):
        out.append(f"<details><summary>{len(pending)} missing run(s)</summary>"
                   + _table(pending[cols + ["status"]].head(200)) + "</details>")
    return out


def _config_section(runs: pd.DataFrame) -> list:
    if runs.empty:
        return []
    rows = []  # one column per model, one row per setting: narrow enough for any page
    for model, g in runs.groupby("model", sort=True):
        row = {"model": model}
        for col in ("model_kind", "activate_logits", "hidden_units", "hidden_layers", "dataset",
                    "epochs", "batch_size", "optimizer", "lr", "engine", "torch_version",
                    "device", "threads", "dtype"):
            if col in g.columns:
                row[col] = ", ".join(str(v) for v in sorted(g[col].dropna().unique(), key=str))
        row["activations"] = g["activation"].nunique()
        row["seeds"] = ", ".join(str(s) for s in sorted(g["seed"].unique()))
        row["n_train"] = ", ".join(str(n) for n in sorted(g["n_train"].unique()))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("model").T.rename_axis("setting").reset_index()
    return ["<h2 id='config'>Configuration</h2>", _table(table)]


FINDINGS_INTRO = ("Each claim of the original notebook, judged from this study's finished runs. "
                  "<em>Inconclusive</em> means the data cannot decide (an activation or model missing, "
                  "one seed, or an interval that straddles the threshold); the numbers say why.")


def _floor(lo: float, hi: float) -> str:
    """The cross-entropy floor of logits in (lo, hi), as the prose quotes it."""
    return f"{analysis.logit_loss_floor(lo, hi):.3f}"


PAPERS_INTRO = ("This study is a paper preset: each published claim, judged from its finished runs "
                "(<em>reproduced</em> needs the claim to hold in at least 80% of the paired seeds).")
MECHANISMS_INTRO = ("The explanations the original offered, measured with <code>--diagnostics</code> "
                    "(per-layer statistics on a fixed probe batch): a flat loss is blamed on saturation "
                    "only when saturated units or vanishing gradients are measured; bounded activations "
                    "on the logits are held back by the cross-entropy floor their range allows "
                    f"({_floor(0, 1)} nats for logits in (0, 1), {_floor(-1, 1)} for (-1, 1), "
                    f"{claims.common.N_CLASSES} classes).")


def _verdict_table(ident: str, heading: str, intro: str, table, labels=None) -> list:
    """A `claims.evaluate` table (claim, scope, verdict, evidence); nothing when there are no
    rows. `labels`: {claim id: {verdict: what to show}} (paper presets show 'reproduced')."""
    if table is None or table.empty:
        return []
    out = [f"<h2 id='{ident}-heading'>{_e(heading)}</h2>", f"<p>{intro}</p>",
           f"<table id='{ident}' class='findings'><thead><tr><th>claim</th><th>scope</th>"
           "<th>verdict</th><th>evidence</th></tr></thead><tbody>"]
    for r in table.itertuples():
        shown = (labels or {}).get(r.id, {}).get(r.verdict, r.verdict)
        cls = shown.replace(" ", "-")
        out.append(f"<tr><td><strong>({_e(r.id)})</strong> {_e(r.claim)}</td><td>{_e(r.scope)}</td>"
                   f"<td><span class='verdict {_e(cls)}'>{_e(shown)}</span></td>"
                   f"<td>{_e(r.evidence)}</td></tr>")
    out.append("</tbody></table>")
    return out


def _figure_html(stem: str, caption: str, png: bytes) -> str:
    """A figure embedded in the page (it opens offline), captioned with its SVG beside the page."""
    b64 = base64.b64encode(png).decode("ascii")
    return (f"<figure id='fig-{_e(stem)}'><img alt='{_e(caption)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{_e(caption)} (<a href='figures/{_e(stem)}.svg'><code>figures/{_e(stem)}.svg"
            f"</code></a>)</figcaption></figure>")


SAMPLES_INTRO = ("Is an activation's advantage a small-data effect? (n1) a permutation test of the "
                 "activation x n interaction on final test loss (seeds as blocks), Kendall's tau "
                 "between the rankings at the smallest and largest n and the activations that move; "
                 "(n2) the notebook's \"SELU ends among the lowest\" at each n on its own.")
FAIRNESS_INTRO = ("A comparison at one learning rate measures the activation and its preferred step "
                  "size at once. (r1) the ranking at the reference setting against each activation "
                  "at its best value, chosen on the validation split; the test set is read only "
                  "after the choice.")


def _answers_section(t) -> list:
    found = t.get("answers") or []
    if not found:
        return []
    items = "".join(f"<li>{_e(a.text)} <a href='#{_e(a.anchor)}'>evidence</a></li>" for a in found)
    return ["<h2 id='answers'>Answers</h2>",
            "<p>What this study says, each sentence from the verdicts and numbers below.</p>",
            f"<ol class='answers'>{items}</ol>"]


def _tuning_section(t) -> list:
    if "tuned" not in t or t["tuned"].empty:
        return []
    axes = t["tuning_axes"]
    tuned = t["tuned"]
    view = tuned[["condition", "n_train", "activation", *[f"best_{a}" for a in axes],
                  *[c for c in ("val_loss", "val_accuracy") if c in tuned], "test_loss"]].copy()
    view["test loss 95% CI"] = [_ci(lo, hi) for lo, hi in zip(tuned["test_loss_low"], tuned["test_loss_high"])]
    view["test accuracy"] = tuned["test_accuracy"]
    view["test accuracy 95% CI"] = [_ci(lo, hi) for lo, hi in
                                    zip(tuned["test_accuracy_low"], tuned["test_accuracy_high"])]
    view["rank"] = tuned["rank"]
    out = ["<h2 id='tuning'>Tuned per activation</h2>",
           f"<p>For every condition, training-set size and activation, the value of "
           f"{_e(', '.join(axes))} with the best mean validation score over seeds (a value at which "
           f"any seed diverged or ended above its start is never chosen), then the test metrics "
           f"there (<code>tuned.csv</code>). Beside it, the ranking at the reference setting and "
           f"how far each activation moves.</p>", _table(view)]
    if "ranking_shift" in t and len(t["ranking_shift"]):
        out += ["<h3>Reference ranking against tuned ranking</h3>", _table(t["ranking_shift"])]
    if "stability" in t and len(t["stability"]):
        out += ["<h3>Best and mean over the grid (Eger et al.)</h3>",
                "<p>The tuned test accuracy beside the mean over every value of the grid (a "
                "diverged run counts as chance): a high mean is an activation that works without "
                "tuning.</p>", _table(t["stability"])]
    side = t.get("claims_reference_tuned")
    if side is not None and len(side):
        cols = [c for c in ("id", "scope", "verdict_reference", "verdict_tuned") if c in side]
        out += ["<h3>The notebook's claims at the reference setting and tuned</h3>", _table(side[cols])]
    return out


def _learning_section(t) -> list:
    lc = t.get("learning_curves")
    if lc is None or lc.empty:
        return []
    cols = [c for c in lc.columns if not c.endswith("_status") and c not in ("rmse",)]
    return ["<h2 id='learning'>Learning curves in n</h2>",
            "<p>Final test loss against the training-set size, per condition and activation: a "
            "power law <code>a n^-b + c</code> through the across-seed means (the two-parameter "
            "<code>a n^-b</code> where the offset cannot be identified: fewer than four sizes, or "
            "a fitted offset at 0 or at the smallest loss), bootstrap intervals over seeds for the "
            "exponent b, and the images needed to reach 80% and 90% test accuracy, interpolated in "
            "log n (<code>learning_curves.csv</code>).</p>", _table(lc[cols])]


def _robustness_section(t) -> list:
    rob = t.get("robustness")
    if rob is None or rob.empty:
        return []
    out = ["<h2 id='robustness'>Robustness to one-bit perturbations</h2>",
           "<p>Each verdict recomputed with perturbed siblings in place of their originals "
           "(<code>init</code>: one weight's lowest mantissa bit flipped; <code>order</code>: "
           "another batch order): in how many replica sets it holds "
           "(<code>robustness.csv</code>).</p>", _table(rob)]
    rec = t.get("recurrence")
    if rec is not None and len(rec):
        out += ["<h3>Do divergences and spikes recur in the siblings?</h3>", _table(rec)]
    var = t.get("perturbation_variance")
    if var is not None and len(var):
        out += ["<h3>Variance from a perturbation alone, beside the variance across seeds</h3>",
                "<p>Ratio near 1: one bit does as much as a new seed (Summers &amp; Dinneen).</p>",
                _table(var)]
    return out


def _ranking_section(t) -> list:
    if "ranking" not in t:
        return []
    r = t["ranking"]
    out = ["<h2 id='ranking'>Ranking by final test loss</h2>",
           "<p>Per model and training-set size, activations ranked by their mean final test loss "
           "over seeds (1 = lowest). <em>Rank over seeds</em> gives the mean and range of the "
           "per-seed ranks; Kendall's W says how alike the seeds rank (1 = identical).</p>"]
    for (model, n), g in r.groupby(["model", "n_train"], sort=True):
        w = g["kendall_w"].iloc[0]
        view = pd.DataFrame({
            "rank": g["rank"], "activation": g["activation"], "mean final test loss": g["mean"],
            "rank over seeds": [f"{m:.1f} ({lo:.0f}-{hi:.0f})" if np.isfinite(m) else "n/a"
                                for m, lo, hi in zip(g["mean_rank"], g["rank_min"], g["rank_max"])],
            "seeds": g["n_seeds"]})
        sig = t["paired"]
        sig = sig[(sig["model"] == model) & (sig["n_train"] == n)]
        tested = int(sig["p"].notna().sum())
        paired = (f"{int(sig['significant'].sum())} of {tested} paired differences significant "
                  f"after Holm" if tested else "no paired tests (fewer than two common seeds)")
        out.append(f"<details><summary>{_e(model)}, n_train {_e(n)}: best "
                   f"{_e(g['activation'].iloc[0])}; Kendall's W {_e(fmt(w))}; "
                   f"{_e(paired)}</summary>"
                   + _table(view) + "</details>")
    return out


def _tables_section(t, threshold) -> list:
    out = ["<h2 id='tables'>Tables</h2>"]
    if "summary" in t:
        s = t["summary"]
        view = s[s["metric"].isin(["final_test_loss", "final_test_accuracy", "start_loss",
                                   "steps_to_threshold", "reached"])]
        view = view.assign(interval=[_ci(lo, hi) for lo, hi in zip(view["low"], view["high"])])
        out.append("<details><summary>Across seeds: mean and 95% interval per configuration "
                   "(all metrics in summary.csv)</summary><div class='scroll'>"
                   + _table(view[CONFIG_KEYS + ["metric", "n_seeds", "mean", "sd",
                                                         "interval", "method", "note"]])
                   + "</div></details>")
    if "fits" in t:
        f = t["fits"]
        agg = (f.groupby(["model", "n_train", "activation", "curve"])
               .agg(slope=("slope", "mean"), r2=("r2", "mean"), seeds=("slope", "count"))
               .reset_index())
        out.append("<details><summary>Least-squares slopes of the epoch losses (nats per epoch, "
                   "mean over seeds; per run in fits.csv)</summary><div class='scroll'>"
                   + _table(agg) + "</div></details>")
    spikes = t["spikes"]
    if len(spikes):
        top = spikes.sort_values("loss", ascending=False).head(50)
        out.append(f"<details><summary>{len(spikes)} batch-loss spikes (highest 50; all in "
                   f"spikes.csv)</summary><div class='scroll'>"
                   + _table(top[["model", "activation", "seed", "n_train", "epoch", "step", "loss",
                                 "baseline", "ratio", "moved", "recovered", "test_change"]])
                   + "</div></details>")
    else:
        out.append("<p>No batch-loss spikes.</p>")
    return out


def _method_section(spike_k, spike_window, threshold) -> list:
    return ["<h2 id='method'>How these numbers are made</h2><ul>",
            "<li>Start: the untrained model's epoch-0 evaluation (train loss over the training "
            "subset). Final: the last stored epoch. Gap: final test minus final train loss (the "
            "train loss of an epoch is the mean of its batch losses, as in the original).</li>",
            f"<li>Steps to threshold: first batch update at which the mean of the last 10 batch "
            f"losses is below {threshold:g} nats. 'Never' is a value: the summary's "
            f"<code>reached</code> rows give the share of seeds that got there, and the mean "
            f"steps is over those seeds only.</li>",
            f"<li>Intervals over seeds: t-interval below {analysis.MIN_BOOTSTRAP} seeds, percentile "
            f"bootstrap of the mean from {analysis.MIN_BOOTSTRAP} up; with 2 seeds the t-interval "
            "is wide (t = 12.7), with 1 there is none and findings say inconclusive.</li>",
            "<li>Regression lines: the original's batch line is <code>np.polyfit</code> through "
            "the epoch-0 train loss at update 0 and every batch loss; epoch lines are "
            "least-squares fits of the epoch losses against epoch (0 to the end), with the "
            "slope's standard error and 95% interval.</li>",
            f"<li>Spikes: a batch loss above the median + {spike_k:g} x MAD of the previous "
            f"{spike_window} losses (MAD floored at {analysis.MAD_FLOOR:.0%} of the median).</li>",
            "<li>Paired comparisons: paired t-test over the seeds two activations share, "
            "Holm-corrected within each model and training-set size.</li>",
            f"<li>Logit bound: an activation on the logits keeps them in its range; logits in "
            f"(0, 1) cannot bring {claims.common.N_CLASSES}-class cross-entropy below {_floor(0, 1)} "
            f"nats, logits in (-1, 1) not below {_floor(-1, 1)}.</li></ul>"]


def _table(df: pd.DataFrame) -> str:
    """An HTML table with every cell escaped and numbers right-aligned."""
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for v in rec:
            if isinstance(v, (bool, np.bool_)):
                cells.append(f"<td>{'yes' if v else 'no'}</td>")
            elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                cells.append(f"<td class='num'>{_e(_num(v))}</td>")
            else:
                cells.append(f"<td>{_e('' if v is None or v is pd.NA else v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table></div>")


def _num(v) -> str:
    if isinstance(v, (int, np.integer)):
        return str(v)
    if np.isnan(v):
        return ""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e6 else fmt(v)


def _ci(low, high) -> str:
    return "" if not (np.isfinite(low) and np.isfinite(high)) else f"[{fmt(low)}, {fmt(high)}]"


def _e(x) -> str:
    return html.escape(str(x), quote=True)
