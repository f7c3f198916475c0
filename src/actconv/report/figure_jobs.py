"""Which figures the page shows: one `FigureJob` (section, file stem, caption, a call that draws
it) for everything the data allows; `render` draws them, only the page writes."""
from dataclasses import dataclass
from functools import partial
from typing import Callable

import pandas as pd

from ..analysis import diagnostics
from ..analysis.tables import flag, only, rows, run_keys
from ..study import metrics
from ..study.activations import BOUNDED_RANGE, FAMILIES, use_stored_activations
from . import figures as plots
from .figures.inside import histogram_shade
from .loading import run_diagnostics
from .render import in_child

@dataclass(frozen=True)
class FigureJob:
    """One figure of the page: where it goes, what it says, and how to draw it."""
    section: str
    slug: str
    caption: str
    draw: Callable  # () -> Figure; called in a worker process, so only its picture travels back
    also: tuple = ()  # (slug, caption) of further figures `draw` returns after the first, in a list


def curve_figures(results, t) -> list:
    """A FigureJob for everything the data allows."""
    out = []
    epochs, batches = t["epochs"], t["finished_batches"]
    # The runs that have batch rows (their keys): the figures read only the rows they draw.
    keys = run_keys(batches, results.runs)
    start = results.epochs[results.epochs["run_id"].isin(keys["run_id"])] if len(keys) else epochs
    if epochs.empty and keys.empty:
        return out
    models = sorted(epochs["model"].unique())
    logits = _activated_logits(results.runs)
    ci = t.get("curves")
    for model in sorted(set(epochs["model"]) | set(keys["model"])):
        e = epochs[epochs["model"] == model]
        b = keys[keys["model"] == model]
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
                                     partial(plots.family_batch_losses, _one_seed(batches, b, in_batches), start,
                                             in_batches, model=model,
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
    if len(keys):
        for model in sorted(keys["model"].unique()):
            n, seed, note = _dynamics_run(keys, t["spikes"], model)
            shown = keys[(keys["model"] == model) & (keys["n_train"] == n) & (keys["seed"] == seed)]
            out.append(FigureJob("Batch-loss dynamics and spikes", f"{model}-dynamics",
                                 f"{model}: batch loss of {note}, whole run and first epoch; spikes marked.",
                                 partial(plots.batch_dynamics, rows(only(batches, shown["run_id"])),
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


def _one_seed(batches, keys, activations):
    """The rows a family's batch figure draws (its activations at their smallest seed, as it
    picks; `keys`: one model's runs with batch rows): a worker is handed one run per curve,
    not every seed's batches."""
    k = keys[keys["activation"].isin(activations)]
    return rows(only(batches, k.loc[k["seed"] == k["seed"].min(), "run_id"] if len(k) else []))


TUNING = "Learning-rate sensitivity"
LEARNING = "Learning curves in n"


def question_figures(t) -> list:
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
                                 partial(plots.learning_curve_fits, t.get("curve_runs", t["per_run"]), lc,
                                         model=model)))
    return out


GALLERY = "Activation functions and where they saturate"
DYNAMICS = "Inside the networks: per-layer diagnostics"


def diagnostics_figures(results, epochs) -> list:
    """The activation gallery (shown at the top), the logit floor, and per-layer figures."""
    runs = results.runs[results.runs["run_id"].isin(epochs["run_id"].unique())]
    present = [a for a in plots.STYLES if a in set(runs["activation"])]
    present += sorted(use_stored_activations(runs) - set(present))  # parametric and the user's
    gallery, shades = in_child(_activation_tables, present) if present else (None, None)
    out = [FigureJob(GALLERY, "activation-gallery", "Each activation of this study (colour) and its "
                     "derivative (black, dashed) over [-5, 5]; grey where the derivative is below 1% of "
                     "its maximum, which is what the saturation figures count.",
                     partial(plots.activation_gallery, present, table=gallery))]
    bounded = runs["activation"].isin(list(BOUNDED_RANGE))
    on_logits = flag(runs, "activate_logits")
    if (bounded & on_logits & (runs["model_kind"] == "mlp")).any():
        out.append(FigureJob(DYNAMICS, "logit-floor", "Bounded activations on the logits (left) cannot go "
                             "below the floor their logit range allows; with linear logits (right) they can.",
                             partial(plots.logit_floor_curves, epochs, runs)))
    diag = only(results.diagnostics, runs["run_id"])
    measured = set(run_keys(diag, runs)["run_id"])
    for model in sorted(runs.loc[runs["run_id"].isin(measured), "model"].unique()):
        r = runs[(runs["model"] == model) & runs["run_id"].isin(measured)]
        n = int(r["n_train"].max())
        # One job per model draws its three per-layer figures from one pass over the diagnostics
        # of its largest size, in a worker while this process goes on.
        out.append(FigureJob(DYNAMICS, f"{model}-layer-stats", f"{model}, {n} images: activation mean ± "
                             f"standard deviation per hidden layer on the {metrics.PROBE_SIZE['mlp']}-image "
                             f"probe batch ({metrics.PROBE_SIZE['tinyvgg']} for TinyVGG) after each epoch, "
                             f"averaged over seeds, as Glorot & Bengio plotted them.",
                             partial(_layer_figures, diag, r, model, n),
                             also=((f"{model}-gradients", f"{model}, {n} images: weight-gradient norm "
                                    f"per layer (log axis) and the first/last layer ratio, median over seeds."),
                                   (f"{model}-saturation", f"{model}, {n} images: saturated entries and "
                                    f"dead units per activation."))))
        pick = r[r["n_train"] == n].sort_values("seed")
        pick = pick[pick["activation"] == "sigmoid"] if pick["activation"].eq("sigmoid").any() else pick
        run = pick.iloc[0]
        out.append(FigureJob(DYNAMICS, f"{model}-histograms", f"{model}: pre-activation histograms of one "
                             f"run ({run['activation']}, seed {run['seed']}, {n} images) over training.",
                             partial(plots.preact_histograms, run_diagnostics(results, run["run_id"]), r,
                                     run["run_id"], shade=shades[shades["activation"] == run["activation"]])))
    return out


def _layer_figures(diag, runs: pd.DataFrame, model: str, n: int) -> list:
    """Activation statistics, gradient norms, saturation: the aggregates of one model at size n,
    read once (a worker is handed them, never every run's rows)."""
    summary = diagnostics.layer_summary(diag, runs[runs["n_train"] == n])
    return [draw(None, runs, model=model, n_train=n, summary=summary)
            for draw in (plots.layer_activation_stats, plots.gradient_norms, plots.saturation_dead_units)]


def _activation_tables(names) -> tuple:
    """The gallery's table of `names` and each one's shading over the histograms' range (torch's
    autograd: in a child process, see `in_child`)."""
    return diagnostics.activation_table(names), histogram_shade(names)


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
