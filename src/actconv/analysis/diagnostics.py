"""Training dynamics per layer, analysed as long tables.

What is recorded during training (`Recorder`, a probe batch's per-layer statistics and
gradient norms) lives in `train/recorder.py`, torch only, so that training never imports pandas.
Here: analysis (pure functions on the `diagnostics` long table joined to `runs`); the
verdicts built on it (mechanisms m1-m3, paper presets) are in `claims/`.
"""

import numpy as np
import pandas as pd

from ..study import activations as acts
from ..study.metrics import HIST_EDGES, LAYER_METRICS, OUTPUT, SATURATION, derivative, max_derivative
from .tables import CONFIG_KEYS, RUN_KEYS, need, only, rows


# -- analysis: pure functions on the diagnostics long table ------------------------------

GROUP = CONFIG_KEYS


def layer_order(name: str) -> tuple:
    """Sort key: layer1, layer2, ..., layer10, output, then anything else; a network's own
    layers are 'layerN:module.path' (the position first, then where it sits)."""
    head = name.split(":", 1)[0]
    if head.startswith("layer") and head[5:].isdigit():
        return (0, int(head[5:]))
    return (1, 0) if name == OUTPUT else (2, name)


def hidden_layers(names) -> list[str]:
    """The hidden layers among layer names, in forward order."""
    return sorted((n for n in set(names) if layer_order(n)[0] == 0), key=layer_order)


def is_hidden(layers: pd.Series) -> pd.Series:
    """Boolean mask: which layer names are hidden layers (a bool Series even when empty)."""
    return layers.map(lambda n: layer_order(n)[0] == 0).astype(bool)


def with_runs(diagnostics: pd.DataFrame, runs: pd.DataFrame, extra=()) -> pd.DataFrame:
    """Diagnostics rows with their run's keys. Needs `diagnostics` (run_id, epoch, step,
    layer, metric, value) and `runs` (run_id, model, activation, seed, n_train, + extra)."""
    need(diagnostics, "diagnostics", ["run_id", "epoch", "step", "layer", "metric", "value"])
    need(runs, "runs", RUN_KEYS + list(extra))
    keys = runs[RUN_KEYS + list(extra)].drop_duplicates("run_id")
    return diagnostics.merge(keys, on="run_id", how="inner")


def probe_table(diagnostics: pd.DataFrame, runs: pd.DataFrame,
                metrics=tuple(LAYER_METRICS) + ("weight_norm",)) -> pd.DataFrame:
    """One row per run, probe epoch and layer, one column per probe metric.

    Needs `diagnostics` (run_id, epoch, step, layer, metric, value) and `runs` (run_id,
    model, activation, seed, n_train). Layers without a metric (the output layer of a
    model with linear logits has only weight_norm) get NaN there.
    """
    d = with_runs(diagnostics[diagnostics["metric"].isin(metrics)], runs)
    if d.empty:
        return pd.DataFrame(columns=RUN_KEYS + ["epoch", "step", "layer", *metrics])
    wide = d.pivot_table(index=RUN_KEYS + ["epoch", "step", "layer"], columns="metric",
                         values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    wide["_order"] = wide["layer"].map(layer_order)
    return wide.sort_values(["run_id", "epoch", "_order"]).drop(columns="_order").reset_index(drop=True)


def layer_curves(diagnostics: pd.DataFrame, runs: pd.DataFrame,
                 metric: str = "act_mean") -> pd.DataFrame:
    """Across seeds, per (model, activation, n_train, layer, epoch): mean, sd and n of a probe metric.

    Needs `diagnostics` and `runs` as `probe_table`. Columns: model, activation, n_train,
    layer, epoch, mean, sd, n.
    """
    d = with_runs(diagnostics[diagnostics["metric"] == metric], runs)
    out = (d.groupby(GROUP + ["layer", "epoch"])["value"]
           .agg(mean="mean", sd="std", n="count").reset_index())
    out["_order"] = out["layer"].map(layer_order)
    return out.sort_values(GROUP + ["_order", "epoch"]).drop(columns="_order").reset_index(drop=True)


def gradient_curves(diagnostics: pd.DataFrame, runs: pd.DataFrame,
                    metric: str = "grad_norm") -> pd.DataFrame:
    """Across seeds, per (model, activation, n_train, layer, step): median and quartiles.

    Needs `diagnostics` and `runs` as `probe_table`; `metric` is grad_norm (one row per
    weight layer) or grad_ratio (layer 'first/last'). Columns: model, activation,
    n_train, layer, step, median, q25, q75, n.
    """
    d = with_runs(diagnostics[diagnostics["metric"] == metric], runs)
    g = d.groupby(GROUP + ["layer", "step"])["value"]
    out = pd.concat([g.median().rename("median"), g.quantile(0.25).rename("q25"),
                     g.quantile(0.75).rename("q75"), g.count().rename("n")], axis=1).reset_index()
    out["_order"] = out["layer"].map(layer_order)
    return out.sort_values(GROUP + ["_order", "step"]).drop(columns="_order").reset_index(drop=True)


def preact_histogram(diagnostics: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """One run's pre-activation histograms: epoch, layer, left, right, fraction.

    Needs `diagnostics` (run_id, epoch, layer, metric, value). The first and last bins are
    the tails (left -inf, right +inf); fractions of one layer and epoch sum to 1.
    """
    d = diagnostics[(diagnostics["run_id"] == run_id)
                    & diagnostics["metric"].str.startswith("preact_hist_")]
    index = d["metric"].str[len("preact_hist_"):].astype(int)
    bounds = np.concatenate([[-np.inf], HIST_EDGES, [np.inf]])
    out = pd.DataFrame({"epoch": d["epoch"].to_numpy(), "layer": d["layer"].to_numpy(),
                        "left": bounds[index.to_numpy()], "right": bounds[index.to_numpy() + 1],
                        "fraction": d["value"].to_numpy()})
    out["_order"] = out["layer"].map(layer_order)
    return out.sort_values(["_order", "epoch", "left"]).drop(columns="_order").reset_index(drop=True)


def unit_fractions(diagnostics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Saturated and dead fractions of the hidden layers per (model, activation, n_train).

    Needs `diagnostics` and `runs` as `probe_table`. Per run, the mean over hidden layers
    at epoch 0 (`*_start`) and at the last probed epoch (`*_end`), and the largest layer
    value over all epochs (`*_max`); then the mean over seeds, with `n` seeds.
    """
    p = probe_table(diagnostics, runs, metrics=("saturated", "dead"))
    p = p[is_hidden(p["layer"])]
    cols = ["saturated_start", "saturated_end", "saturated_max", "dead_start", "dead_end", "dead_max"]
    if p.empty:
        return pd.DataFrame(columns=GROUP + cols + ["n"])
    # Every run at once (a loop over runs took 6 ms each): first and last probed epoch per run.
    epoch = p.groupby("run_id")["epoch"]
    first = p[p["epoch"] == epoch.transform("min")].groupby(RUN_KEYS)[["saturated", "dead"]].mean()
    last = p[p["epoch"] == epoch.transform("max")].groupby(RUN_KEYS)[["saturated", "dead"]].mean()
    most = p.groupby(RUN_KEYS)[["saturated", "dead"]].max()
    per_run = pd.DataFrame({f"{m}_{w}": part[m] for m in ("saturated", "dead")
                            for w, part in (("start", first), ("end", last), ("max", most))}).reset_index()
    out = per_run.groupby(GROUP)[cols].mean()
    out["n"] = per_run.groupby(GROUP)["seed"].nunique()
    return out.reset_index()


# What the per-layer figures draw of the diagnostics (the histograms read their one run).
LAYER_FIGURE_METRICS = ("act_mean", "act_std", "grad_norm", "grad_ratio", "saturated", "dead")


def layer_summary(diagnostics, runs: pd.DataFrame) -> dict:
    """The aggregates the per-layer figures draw for `runs` (one model and size): `act_mean` and
    `act_std` (`layer_curves`), `gradients` (`gradient_curves` of grad_norm, then grad_ratio)
    and `units` (`unit_fractions`). `diagnostics` is a DataFrame or rows left in the store,
    read one activation's runs at a time: 30 seeds x 21 activations never sit in memory
    at once, and a figure is handed the aggregates, never every run."""
    parts = {k: [] for k in ("act_mean", "act_std", "grad_norm", "grad_ratio", "units")}
    for _, r in runs.groupby("activation", sort=True):  # every aggregate is per activation
        d = rows(only(diagnostics, r["run_id"]), metrics=LAYER_FIGURE_METRICS)
        for metric in ("act_mean", "act_std"):
            parts[metric].append(layer_curves(d, r, metric))
        for metric in ("grad_norm", "grad_ratio"):
            parts[metric].append(gradient_curves(d, r, metric))
        parts["units"].append(unit_fractions(d, r))
    out = {k: pd.concat(v, ignore_index=True) for k, v in parts.items() if v}
    if out:
        out["gradients"] = pd.concat([out.pop("grad_norm"), out.pop("grad_ratio")])
    return out


# Near the SELU fixed point (0, 1): Klambauer et al.'s theorem 1 maps mean in [-0.1, 0.1]
# and variance in [0.8, 1.5] into itself; a looser band, since inputs are images.
MEAN_TOL = 0.2
VAR_BAND = (0.5, 1.5)


def self_normalisation(diagnostics: pd.DataFrame, runs: pd.DataFrame, activation: str = "selu", *,
                       mean_tol: float = MEAN_TOL, var_band=VAR_BAND) -> pd.DataFrame:
    """Per (model, n_train, hidden layer, epoch): activation mean and variance, mean over seeds.

    Needs `diagnostics` and `runs` as `probe_table`. `near` is |mean| <= mean_tol and
    variance within var_band. Columns: model, n_train, layer, epoch, mean, var, n, near.
    """
    p = probe_table(diagnostics, runs[runs["activation"] == activation], metrics=("act_mean", "act_std"))
    p = p[is_hidden(p["layer"])].assign(var=lambda d: d["act_std"] ** 2)
    out = (p.groupby(["model", "n_train", "layer", "epoch"])
           .agg(mean=("act_mean", "mean"), var=("var", "mean"), n=("seed", "nunique")).reset_index())
    out["near"] = (out["mean"].abs() <= mean_tol) & out["var"].between(*var_band)
    out["_order"] = out["layer"].map(layer_order)
    out = out.sort_values(["model", "n_train", "_order", "epoch"]).drop(columns="_order")
    return out.reset_index(drop=True)


def activation_table(names=None, lo: float = -5.0, hi: float = 5.0, points: int = 501) -> pd.DataFrame:
    """Each activation and its derivative (autograd) over [lo, hi]: activation, x, value,
    derivative, saturated (derivative below 1% of the activation's largest)."""
    import torch  # here only: the report's own process never loads torch (~480 MB)
    x = torch.linspace(lo, hi, points, dtype=torch.float64)
    rows = []
    for name in names or list(acts.ACTIVATIONS):
        act = acts.make_activation(name).double()
        with torch.no_grad():
            y = act(x)
        d = derivative(act, x)
        dmax = max_derivative(act)
        rows.append(pd.DataFrame({"activation": name, "x": x.numpy(), "value": y.numpy(),
                                  "derivative": d.numpy(),
                                  "saturated": d.abs().numpy() < SATURATION * dmax}))
    return pd.concat(rows, ignore_index=True)


def loss_roughness(batches: pd.DataFrame, skip_epochs: int = 1) -> pd.DataFrame:
    """Step-to-step variation of each run's batch loss, after its first `skip_epochs`.

    Needs `batches` (run_id, model, activation, seed, n_train, epoch, step, loss). Columns:
    the run keys, `rough` (standard deviation of loss[t] - loss[t-1]), `rough_log` (the
    same for log loss: scale-free, so a lower loss level is not mistaken for smoothness),
    `level` (mean loss), `steps`.
    """
    need(batches, "batches", RUN_KEYS + ["epoch", "step", "loss"])
    rows = []
    for key, g in batches[batches["epoch"] > skip_epochs].sort_values("step").groupby(RUN_KEYS):
        loss = g["loss"].to_numpy(float)
        loss = loss[np.isfinite(loss)]
        diff = np.diff(loss)
        logd = np.diff(np.log(np.maximum(loss, 1e-12)))
        rows.append(dict(zip(RUN_KEYS, key), rough=diff.std(ddof=1) if len(diff) > 1 else np.nan,
                         rough_log=logd.std(ddof=1) if len(logd) > 1 else np.nan,
                         level=loss.mean() if len(loss) else np.nan, steps=len(loss)))
    return pd.DataFrame(rows, columns=RUN_KEYS + ["rough", "rough_log", "level", "steps"])


def roughness_by_level(batches: pd.DataFrame, *, window: int = 25, min_steps: int = 20,
                       edges=tuple(np.geomspace(0.01, 10.0, 13))) -> pd.DataFrame:
    """Step-to-step variation of the batch loss relative to its local level, per loss band.

    A lower loss has smaller batch-to-batch changes in nats and larger ones relative to
    itself, so two curves are compared only where their levels match. Needs `batches`
    (run_id, model, activation, seed, n_train, step, loss). Per run: the trend is the
    centred running median over `window` steps; each step's change is divided by the
    trend; steps are grouped into bands of the trend (`edges`, log-spaced); bands with at
    least `min_steps` steps give `rough` (standard deviation of the relative change).
    Columns: the run keys, band_low, band_high, rough, steps.
    """
    need(batches, "batches", RUN_KEYS + ["step", "loss"])
    edges = np.asarray(edges)
    rows = []
    for key, g in batches.sort_values("step").groupby(RUN_KEYS):
        loss = g["loss"].to_numpy(float)
        loss = loss[np.isfinite(loss)]
        if len(loss) < 2:
            continue
        trend = pd.Series(loss).rolling(window, center=True, min_periods=1).median().to_numpy()
        rel, level = np.diff(loss) / trend[1:], trend[1:]
        band = np.digitize(level, edges)
        for b in np.unique(band):
            if 0 < b < len(edges) and (band == b).sum() >= min_steps:
                rows.append(dict(zip(RUN_KEYS, key), band_low=edges[b - 1], band_high=edges[b],
                                 rough=rel[band == b].std(ddof=1), steps=int((band == b).sum())))
    return pd.DataFrame(rows, columns=RUN_KEYS + ["band_low", "band_high", "rough", "steps"])
