"""Pure functions on the long tables: convergence metrics, fits, statistics, spikes, findings.

Nothing here reads or writes files. Every function takes DataFrames of the data contract
(docs in DESIGN.md: `runs`, `epochs`, `batches`) and returns a new DataFrame; its
docstring names the columns it needs. Statistics over seeds take `{condition: values}`.
"""
import dataclasses
import math
import warnings
from itertools import combinations
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .activations import BOUNDED_RANGE, logit_loss_floor
from .store import n_classes_of

RUN_KEYS = ["run_id", "model", "activation", "seed", "n_train"]
CONFIG_KEYS = ["model", "activation", "n_train"]
# Below this many seeds a bootstrap interval is too coarse (5 values have few distinct
# resamples), so a t-interval is used instead; rliable bootstraps from 5 runs up as well.
MIN_BOOTSTRAP = 5
# A flat loss series has MAD 0, which would make every wiggle a spike: floor it at 1% of
# the baseline.
MAD_FLOOR = 0.01
VERDICTS = ("supported", "not supported", "inconclusive")


# -- per run ---------------------------------------------------------------------------

def separate_engines(results):
    """The same results with each model that ran under several engines split into one model
    per engine (`mlp (loop)`, `mlp (ensemble)`): engines round differently, so such runs are
    not more seeds of one configuration, and side by side they compare the engines."""
    runs = results.runs
    if runs.empty or "engine" not in runs:
        return results
    engines = runs.groupby("model")["engine"].nunique()
    mixed = runs["model"].isin(engines.index[engines > 1])
    if not mixed.any():
        return results
    model = runs["model"].where(~mixed, runs["model"] + " (" + runs["engine"] + ")")
    by_run = dict(zip(runs["run_id"], model))

    def relabel(table):
        if table.empty or "model" not in table:
            return table
        return table.assign(model=table["run_id"].map(by_run).fillna(table["model"]))

    return dataclasses.replace(results, runs=runs.assign(model=model), epochs=relabel(results.epochs),
                               batches=relabel(results.batches), diagnostics=relabel(results.diagnostics))


def run_metrics(epochs: pd.DataFrame, batches: pd.DataFrame | None = None, *,
                threshold: float = 0.5, smooth: int = 10) -> pd.DataFrame:
    """One row per run: starting and final losses, gap, AUC, steps to a loss threshold.

    Needs `epochs`: run_id, model, activation, seed, n_train, epoch, train_loss,
    train_accuracy, test_loss, test_accuracy; optionally `batches`: run_id, step, loss.
    The start is the epoch-0 evaluation of the untrained model, the end the last stored
    epoch; `gap` is final test loss minus final train loss; `auc_*` is the trapezoid
    area under the epoch loss curve (loss x epochs, from epoch 0). With `batches`,
    `steps_to_threshold` is the first step at which the mean of the last `smooth` batch
    losses falls below `threshold`, NaN with `reached` False when that never happens.
    """
    _need(epochs, "epochs", RUN_KEYS + ["epoch", "train_loss", "train_accuracy", "test_loss",
                                        "test_accuracy"])
    e = epochs.sort_values(["run_id", "epoch"])
    keys = e.groupby("run_id", sort=True)[RUN_KEYS[1:]].first()
    start = e[e["epoch"] == 0].set_index("run_id")
    last = e.loc[e.groupby("run_id")["epoch"].idxmax()].set_index("run_id")
    out = keys.assign(
        start_loss=start["train_loss"], start_test_loss=start["test_loss"],
        start_test_accuracy=start["test_accuracy"],
        final_epoch=last["epoch"], final_train_loss=last["train_loss"],
        final_train_accuracy=last["train_accuracy"], final_test_loss=last["test_loss"],
        final_test_accuracy=last["test_accuracy"])
    out["gap"] = out["final_test_loss"] - out["final_train_loss"]
    for col in ("train_loss", "test_loss"):
        out[f"auc_{col}"] = _trapezoid_by_run(e, col)
    if batches is not None:
        out = out.join(_steps_to_threshold(batches, threshold, smooth))
        out["reached"] = out["reached"].astype("boolean").fillna(False).astype(bool)
    return out.reset_index()


def _trapezoid_by_run(e: pd.DataFrame, col: str) -> pd.Series:
    """Trapezoid area under `col` against epoch, per run (e sorted by run_id, epoch)."""
    g = e.groupby("run_id")
    dx = g["epoch"].diff()
    mid = (e[col] + g[col].shift()) / 2
    return (dx * mid).groupby(e["run_id"]).sum(min_count=1)


def _steps_to_threshold(batches: pd.DataFrame, threshold: float, smooth: int) -> pd.DataFrame:
    """First step whose trailing mean of `smooth` losses is below `threshold`."""
    _need(batches, "batches", ["run_id", "step", "loss"])
    if smooth < 1:
        raise ValueError(f"smooth must be a positive number of batches, got {smooth}")
    b = batches.sort_values(["run_id", "step"])
    smoothed = b.groupby("run_id")["loss"].transform(
        lambda s: s.rolling(smooth, min_periods=smooth).mean())
    below = b[smoothed < threshold]
    first = below.groupby("run_id")["step"].min()
    runs = pd.Index(b["run_id"].unique(), name="run_id")
    out = pd.DataFrame(index=runs)
    out["steps_to_threshold"] = first.reindex(runs).astype(float)
    out["reached"] = out["steps_to_threshold"].notna()
    return out


# -- fits ------------------------------------------------------------------------------

def batch_fit(epochs: pd.DataFrame, batches: pd.DataFrame) -> pd.DataFrame:
    """The original's line per run: batch loss against batch update, epoch-0 loss at x=0.

    Needs `epochs`: run_id, epoch, train_loss; `batches`: run_id, model, activation,
    seed, n_train, step, loss. The points are (0, epoch-0 train loss) then (step, loss)
    for every finite batch loss; slope and intercept are `np.polyfit(x, y, 1)`.
    """
    _need(epochs, "epochs", ["run_id", "epoch", "train_loss"])
    _need(batches, "batches", RUN_KEYS + ["step", "loss"])
    start = epochs[epochs["epoch"] == 0].set_index("run_id")["train_loss"]
    rows = []
    for rid, b in batches.sort_values(["run_id", "step"]).groupby("run_id", sort=True):
        x = b["step"].to_numpy(float)
        y = b["loss"].to_numpy(float)
        if rid in start.index:
            x, y = np.r_[0.0, x], np.r_[float(start[rid]), y]
        ok = np.isfinite(y)
        x, y = x[ok], y[ok]
        slope = intercept = r2 = np.nan
        if len(x) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            r2 = _r2(x, y, slope, intercept)
        rows.append({**b.iloc[0][RUN_KEYS].to_dict(), "n_points": len(x), "slope": slope,
                     "intercept": intercept, "r2": r2})
    return pd.DataFrame(rows, columns=RUN_KEYS + ["n_points", "slope", "intercept", "r2"])


def _r2(x, y, slope, intercept) -> float:
    ss_tot = np.sum((y - y.mean()) ** 2)
    return float(1 - np.sum((y - (slope * x + intercept)) ** 2) / ss_tot) if ss_tot > 0 else np.nan


def epoch_fits(epochs: pd.DataFrame, *, curves=("train_loss", "test_loss"), first_epoch: int = 0,
               confidence: float = 0.95) -> pd.DataFrame:
    """Least-squares line of each epoch loss curve against epoch, per run and curve.

    Needs `epochs`: run_id, model, activation, seed, n_train, epoch and the `curves`
    columns. Returns slope (loss per epoch), intercept, r2, the slope's standard error
    and its `confidence` interval (t with n-2 degrees of freedom, as scipy's linregress
    gives the standard error); stderr and interval are NaN below three points.
    """
    _need(epochs, "epochs", RUN_KEYS + ["epoch", *curves])
    e = epochs[epochs["epoch"] >= first_epoch].sort_values(["run_id", "epoch"])
    rows = []
    for rid, g in e.groupby("run_id", sort=True):
        keys = g.iloc[0][RUN_KEYS].to_dict()
        for curve in curves:
            ok = np.isfinite(g[curve].to_numpy(float))
            x, y = g["epoch"].to_numpy(float)[ok], g[curve].to_numpy(float)[ok]
            fit = dict(n_points=len(x), slope=np.nan, intercept=np.nan, r2=np.nan, stderr=np.nan,
                       slope_low=np.nan, slope_high=np.nan)
            if len(x) >= 2 and np.ptp(x) > 0:
                r = stats.linregress(x, y)
                fit.update(slope=r.slope, intercept=r.intercept,
                           r2=r.rvalue ** 2 if np.isfinite(r.rvalue) else np.nan)
                if len(x) >= 3:
                    t = stats.t.ppf((1 + confidence) / 2, len(x) - 2)
                    fit.update(stderr=r.stderr, slope_low=r.slope - t * r.stderr,
                               slope_high=r.slope + t * r.stderr)
            rows.append({**keys, "curve": curve, **fit})
    cols = RUN_KEYS + ["curve", "n_points", "slope", "intercept", "r2", "stderr", "slope_low",
                       "slope_high"]
    return pd.DataFrame(rows, columns=cols)


# -- statistics across seeds -------------------------------------------------------------

def interval_estimates(scores: Mapping[str, object], *, confidence: float = 0.95,
                       n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean, sd and interval of each condition's values (one value per seed).

    Takes `{condition: values}`; non-finite values are dropped and `n` counts the rest.
    The interval is a t-interval below 5 values and a percentile bootstrap of the mean
    (`n_boot` resamples, fixed `seed`) from 5 up; with one value there is none.
    """
    rows = {c: _interval(v, confidence, n_boot, seed) for c, v in scores.items()}
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["n", "mean", "sd", "low", "high", "method", "note"])


def _interval(values, confidence=0.95, n_boot=2000, seed=0) -> tuple:
    """(n, mean, sd, low, high, method, note) for one condition."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return 0, np.nan, np.nan, np.nan, np.nan, "none", "no values"
    mean = float(v.mean())
    if n == 1:
        return 1, mean, np.nan, np.nan, np.nan, "none", "one seed: no interval"
    sd = float(v.std(ddof=1))
    if n < MIN_BOOTSTRAP:
        half = stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
        note = "two seeds: the interval is wide" if n == 2 else ""
        return n, mean, sd, mean - half, mean + half, "t", note
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return n, mean, sd, float(low), float(high), "bootstrap", ""


def aggregate(per_run: pd.DataFrame, metrics=None, *, by=CONFIG_KEYS, confidence: float = 0.95,
              n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Across-seed mean, sd and interval of each metric per configuration (long table).

    Needs `per_run`: the `by` columns (default model, activation, n_train) and the metric
    columns (default: every numeric column of `run_metrics` but seed). One row per
    configuration and metric: n_seeds, mean, sd, low, high, method, note.
    """
    by = list(by)
    if metrics is None:
        skip = set(by) | {"seed", "run_id", "final_epoch", "reached"}
        metrics = [c for c in per_run.columns
                   if c not in skip and pd.api.types.is_numeric_dtype(per_run[c])]
    _need(per_run, "per_run", by + list(metrics))
    rows = []
    for key, g in per_run.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            n, mean, sd, low, high, method, note = _interval(g[m], confidence, n_boot, seed)
            rows.append((*key, m, n, mean, sd, low, high, method, note))
    return pd.DataFrame(rows, columns=by + ["metric", "n_seeds", "mean", "sd", "low", "high",
                                            "method", "note"])


def curve_intervals(epochs: pd.DataFrame, columns=("train_loss", "test_loss"), *,
                    by=CONFIG_KEYS, confidence: float = 0.95) -> pd.DataFrame:
    """Across-seed mean and interval of epoch curves, per configuration and epoch.

    Needs `epochs`: the `by` columns, epoch and `columns`. Long table: by, epoch, column,
    n_seeds, mean, low, high (t-interval below 5 seeds, bootstrap from 5).
    """
    by = list(by)
    _need(epochs, "epochs", by + ["epoch", *columns])
    rows = []
    for key, g in epochs.groupby(by + ["epoch"], sort=True):
        for c in columns:
            n, mean, _, low, high, _, _ = _interval(g[c], confidence, 500, 0)
            rows.append((*key, c, n, mean, low, high))
    return pd.DataFrame(rows, columns=by + ["epoch", "column", "n_seeds", "mean", "low", "high"])


def kendall_w(ranks: np.ndarray) -> float:
    """Kendall's coefficient of concordance of a (raters x items) rank matrix, no tie correction."""
    ranks = np.asarray(ranks, dtype=float)
    m, n = ranks.shape
    if m < 2 or n < 2:
        return np.nan
    totals = ranks.sum(axis=0)
    s = np.sum((totals - totals.mean()) ** 2)
    return float(12 * s / (m ** 2 * (n ** 3 - n)))


def rank_activations(per_run: pd.DataFrame, metric: str = "final_test_loss", *,
                     by=("model", "n_train"), lower_is_better: bool = True) -> pd.DataFrame:
    """Rank activations per group by their across-seed mean, with rank stability over seeds.

    Needs `per_run`: the `by` columns, activation, seed and `metric`. Per activation:
    rank of its mean (1 = best), the mean, and its per-seed ranks (mean, sd, min, max);
    per group: Kendall's W of the per-seed rankings over seeds that ran every activation
    (1 = every seed ranks alike, 0 = no agreement).
    """
    by = list(by)
    _need(per_run, "per_run", by + ["activation", "seed", metric])
    out = []
    for key, g in per_run.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        table = g.pivot_table(index="seed", columns="activation", values=metric, aggfunc="mean")
        table = table.where(np.isfinite(table))
        seed_ranks = table.rank(axis=1, ascending=lower_is_better)
        mean = table.mean()
        complete = seed_ranks.dropna()
        w = kendall_w(complete.to_numpy()) if len(complete.columns) else np.nan
        frame = pd.DataFrame({
            "activation": mean.index, "rank": mean.rank(ascending=lower_is_better).to_numpy(),
            "mean": mean.to_numpy(), "mean_rank": seed_ranks.mean().to_numpy(),
            "rank_sd": seed_ranks.std(ddof=1).to_numpy(), "rank_min": seed_ranks.min().to_numpy(),
            "rank_max": seed_ranks.max().to_numpy(), "n_seeds": table.notna().sum().to_numpy(),
            "kendall_w": w, "n_activations": len(mean)})
        for k, v in zip(by, key):
            frame.insert(by.index(k), k, v)
        out.append(frame.sort_values(["rank", "activation"]))
    cols = by + ["activation", "rank", "mean", "mean_rank", "rank_sd", "rank_min", "rank_max",
                 "n_seeds", "kendall_w", "n_activations"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def paired_tests(scores: Mapping[str, object], *, alpha: float = 0.05) -> pd.DataFrame:
    """Paired t-test for every pair of conditions over their common seeds, Holm-corrected.

    Takes `{condition: values}`; pandas Series are paired on their index (the seed),
    other arrays by position. `mean_diff` is a minus b; pairs with fewer than two common
    finite values get NaN and do not count towards the correction.
    """
    series = {c: (v if isinstance(v, pd.Series) else pd.Series(np.asarray(v, dtype=float)))
              for c, v in scores.items()}
    rows = []
    for a, b in combinations(series, 2):
        both = pd.concat([series[a], series[b]], axis=1, join="inner").astype(float)
        both = both[np.isfinite(both).all(axis=1)]
        d = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy()
        t = p = np.nan
        if len(d) >= 2:
            with np.errstate(divide="ignore", invalid="ignore"):
                r = stats.ttest_rel(both.iloc[:, 0], both.iloc[:, 1])
            t, p = float(r.statistic), float(r.pvalue)
        rows.append((a, b, len(d), d.mean() if len(d) else np.nan, t, p))
    out = pd.DataFrame(rows, columns=["a", "b", "n", "mean_diff", "t", "p"])
    out["p_holm"] = holm(out["p"].to_numpy()) if len(out) else []
    out["significant"] = out["p_holm"] < alpha
    return out


def paired_comparisons(per_run: pd.DataFrame, metric: str = "final_test_loss", *,
                       by=("model", "n_train"), alpha: float = 0.05) -> pd.DataFrame:
    """Paired comparisons of activations over the same seeds, per group, Holm within a group.

    Needs `per_run`: the `by` columns, activation, seed and `metric`.
    """
    by = list(by)
    _need(per_run, "per_run", by + ["activation", "seed", metric])
    out = []
    for key, g in per_run.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        scores = {a: s.groupby("seed")[metric].mean() for a, s in g.groupby("activation")}
        frame = paired_tests(scores, alpha=alpha)
        for i, k in enumerate(by):
            frame.insert(i, k, key[i])
        out.append(frame)
    cols = by + ["a", "b", "n", "mean_diff", "t", "p", "p_holm", "significant"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


# -- spikes ------------------------------------------------------------------------------

SPIKE_COLUMNS = RUN_KEYS + ["epoch", "step", "loss", "baseline", "mad", "threshold", "height",
                            "ratio", "epoch_mean", "epoch_mean_without", "epoch_se", "moved",
                            "after_median", "recovered", "test_change", "test_unchanged"]


def detect_spikes(batches: pd.DataFrame, epochs: pd.DataFrame | None = None, *, k: float = 10.0,
                  window: int = 50, min_history: int = 10, test_tolerance: float = 0.1
                  ) -> pd.DataFrame:
    """Batch losses above a robust running baseline: median + k x MAD of the previous window.

    Needs `batches`: run_id, model, activation, seed, n_train, epoch, step, loss; with
    `epochs` (run_id, epoch, test_loss) also the test-loss change over the spike's epoch.
    The baseline is the median of up to `window` previous losses (at least `min_history`),
    MAD their median absolute deviation (floored at 1% of the median). Per spike:
    `height` = loss - baseline, `ratio` = loss / baseline; `moved` says whether the spike
    pulled its epoch's mean batch loss by more than twice that mean's standard error
    (from the epoch's other batches); `recovered` whether the median of the next `window`
    losses is back under the threshold; `test_unchanged` whether the test loss after the
    epoch rose by at most `test_tolerance` (relative) over the epoch before. An infinite
    loss is a spike; a NaN loss is not judged.
    """
    _need(batches, "batches", RUN_KEYS + ["epoch", "step", "loss"])
    if window < 1 or min_history < 1 or min_history > window:
        raise ValueError(f"need 1 <= min_history <= window, got min_history={min_history}, "
                         f"window={window}")
    tests = None
    if epochs is not None:
        _need(epochs, "epochs", ["run_id", "epoch", "test_loss"])
        tests = epochs.set_index(["run_id", "epoch"])["test_loss"]
    rows = []
    for rid, b in batches.sort_values(["run_id", "step"]).groupby("run_id", sort=True):
        loss = b["loss"].to_numpy(float)
        base, mad = _running_baseline(loss, window, min_history)
        thr = base + k * mad
        with np.errstate(invalid="ignore"):
            is_spike = loss > thr  # NaN threshold (too little history) compares False
        if not is_spike.any():
            continue
        keys = b.iloc[0][RUN_KEYS].to_dict()
        ep = b["epoch"].to_numpy()
        step = b["step"].to_numpy()
        for i in np.flatnonzero(is_spike):
            in_epoch = ep == ep[i]
            rest = loss[in_epoch & ~is_spike & np.isfinite(loss)]
            with np.errstate(invalid="ignore", over="ignore"):
                mean_with = float(np.mean(loss[in_epoch & ~np.isnan(loss)]))
            mean_without = float(rest.mean()) if len(rest) else np.nan
            se = float(rest.std(ddof=1) / math.sqrt(len(rest))) if len(rest) >= 2 else np.nan
            after = loss[i + 1:i + 1 + window]
            after = after[np.isfinite(after)]
            after_median = float(np.median(after)) if len(after) else np.nan
            test_change = np.nan
            unchanged = pd.NA
            if tests is not None and (rid, ep[i]) in tests.index and (rid, ep[i] - 1) in tests.index:
                before, now = float(tests[(rid, ep[i] - 1)]), float(tests[(rid, ep[i])])
                test_change = now - before
                unchanged = bool(test_change <= test_tolerance * abs(before))
            rows.append({**keys, "epoch": int(ep[i]), "step": int(step[i]), "loss": loss[i],
                         "baseline": base[i], "mad": mad[i], "threshold": thr[i],
                         "height": loss[i] - base[i],
                         "ratio": loss[i] / base[i] if base[i] > 0 else np.inf,
                         "epoch_mean": mean_with, "epoch_mean_without": mean_without,
                         "epoch_se": se,
                         "moved": bool(np.isfinite(se) and mean_with - mean_without > 2 * se)
                         or not np.isfinite(mean_with),
                         "after_median": after_median,
                         "recovered": bool(np.isfinite(after_median) and after_median <= thr[i]),
                         "test_change": test_change, "test_unchanged": unchanged})
    out = pd.DataFrame(rows, columns=SPIKE_COLUMNS)
    out["test_unchanged"] = out["test_unchanged"].astype("boolean")
    return out


def _running_baseline(loss: np.ndarray, window: int, min_history: int):
    """Median and MAD of the up to `window` values before each position (NaN if too few)."""
    n = len(loss)
    base = np.full(n, np.nan)
    mad = np.full(n, np.nan)
    if n <= min_history:
        return base, mad
    padded = np.r_[np.full(window, np.nan), loss]
    hist = np.lib.stride_tricks.sliding_window_view(padded, window)[:n]  # hist[i] = loss[i-window:i]
    count = (~np.isnan(hist)).sum(axis=1)  # an infinite loss is still history
    ok = np.flatnonzero(count >= min_history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows are masked out below
        h = hist[ok]
        med = np.nanmedian(h, axis=1)
        dev = np.nanmedian(np.abs(h - med[:, None]), axis=1)
    base[ok] = med
    mad[ok] = np.maximum(dev, MAD_FLOOR * np.abs(med))
    return base, mad


# -- the original findings ---------------------------------------------------------------

CLAIMS = {
    "a": "SELU starts with a higher training loss than the other activations",
    "b": "SELU ends among the lowest train and test losses",
    "c": "No overfitting for any activation (generalisation gap small and not growing)",
    "d": "Sigmoid's loss regression lines are almost flat in the MLP",
    "e": "Sigmoid stagnates in TinyVGG too",
    "f": "Single-batch loss explosions leave the epoch losses unchanged",
}


def findings(results, *, margin: float = 0.05, gap_tolerance: float = 0.1,
             flat_ratio: float = 0.25, stagnation_drop: float = 0.1, spike_k: float = 10.0,
             spike_window: int = 50, confidence: float = 0.95) -> pd.DataFrame:
    """The original study's claims checked against a study's data, one verdict per scope.

    Needs `results.runs` (run_id, status, model, model_kind, activate_logits),
    `results.epochs` and `results.batches` (data contract). Only finished runs count
    ('done'; the spike check also reads 'diverged'). Columns: id, claim, scope, verdict
    (supported / not supported / inconclusive), evidence (the numbers behind it).
    Thresholds: a start-loss difference under `margin` nats is none; a gap above
    `gap_tolerance` nats that grows is overfitting; a slope
    within `flat_ratio` x the other activations' median slope is flat; a relative drop
    in train loss below `stagnation_drop` is stagnation; spikes use `spike_k`, `spike_window`.
    """
    runs = results.runs
    _need(runs, "runs", ["run_id", "status", "model", "model_kind", "activate_logits"])
    meta = runs.set_index("run_id")[["status", "model_kind", "activate_logits"]
                                    + [c for c in ["n_classes"] if c in runs]]
    done_ids = meta.index[meta["status"] == "done"]
    epochs = results.epochs[results.epochs["run_id"].isin(done_ids)]
    per_run = (run_metrics(epochs) if len(epochs) else
               pd.DataFrame(columns=RUN_KEYS + ["start_loss", "final_train_loss", "final_test_loss"]))
    per_run = per_run.join(meta, on="run_id")
    rows = []
    models = sorted(per_run["model"].unique()) if len(per_run) else []
    for model in models or ["(none)"]:
        pr = per_run[per_run["model"] == model]
        rows.append(("a", model, *_claim_a(pr, confidence, margin, _absent(runs, model, "selu"))))
    for model in models or ["(none)"]:
        rows.append(("b", model, *_claim_b(per_run[per_run["model"] == model],
                                           _absent(runs, model, "selu"))))
    for model in models or ["(none)"]:
        rows.append(("c", model, *_claim_c(epochs[epochs["model"] == model], gap_tolerance,
                                           confidence)))
    fits = epoch_fits(epochs, confidence=confidence) if len(epochs) else None
    mlp = per_run[per_run["model_kind"] == "mlp"]
    for on_logits, label in ((1, "activation on the logits"), (0, "linear logits")):
        labels = sorted(mlp.loc[mlp["activate_logits"].fillna(0).astype(int) == on_logits, "model"]
                        .unique())
        if not labels:
            rows.append(("d", f"MLP, {label}", "inconclusive",
                         f"no finished MLP runs with {label} in this study"))
        for m in labels:
            rows.append(("d", f"{m} ({label})",
                         *_claim_d(fits[fits["model"] == m], per_run[per_run["model"] == m],
                                   on_logits, flat_ratio, confidence,
                                   _absent(runs, m, "sigmoid"))))
    vgg = sorted(per_run.loc[per_run["model_kind"] == "tinyvgg", "model"].unique())
    if not vgg:
        rows.append(("e", "TinyVGG", "inconclusive", "no finished TinyVGG runs in this study"))
    for m in vgg:
        rows.append(("e", m, *_claim_e(per_run[per_run["model"] == m], stagnation_drop, confidence,
                                       _absent(runs, m, "sigmoid"))))
    finished = meta.index[meta["status"].isin(["done", "diverged"])]
    batches = results.batches[results.batches["run_id"].isin(finished)]
    rows.append(("f", "all models", *_claim_f(batches, results.epochs, meta, spike_k,
                                              spike_window)))
    out = pd.DataFrame(rows, columns=["id", "scope", "verdict", "evidence"])
    out.insert(1, "claim", out["id"].map(CLAIMS))
    return out


def _seed_note(n: int) -> str:
    return {0: "no seeds; ", 1: "one seed: no interval; ",
            2: "two seeds: the interval is wide; "}.get(n, "")


def _interval_text(n, mean, low, high, unit="") -> str:
    if n >= 2:
        return f"{fmt(mean)}{unit} [95% CI {fmt(low)}, {fmt(high)}] over {n} seeds"
    return f"{fmt(mean)}{unit} ({n} seed{'s' if n != 1 else ''}, no interval)"


def _absent(runs: pd.DataFrame, model: str, activation: str) -> str:
    """Why an activation has no finished runs in a model, with its run statuses."""
    r = runs[(runs["model"] == model) & (runs["activation"] == activation)]
    if r.empty:
        return f"no {activation} runs for {model} in this study"
    counts = r["status"].value_counts()
    return (f"no finished {activation} runs for {model} ("
            + ", ".join(f"{n} {st}" for st, n in counts.items()) + ")")


def _claim_a(pr: pd.DataFrame, confidence: float, margin: float, absent: str):
    if "selu" not in set(pr["activation"]):
        return "inconclusive", absent
    if pr["activation"].nunique() < 2:
        return "inconclusive", "SELU is the only activation: nothing to compare with"
    cells, highest = [], 0
    for (n_train, seed), g in pr.groupby(["n_train", "seed"]):
        s = g.loc[g["activation"] == "selu", "start_loss"]
        others = g.loc[g["activation"] != "selu"].groupby("activation")["start_loss"].mean()
        if len(s) and len(others):
            cells.append((n_train, seed, float(s.iloc[0]) - float(others.median())))
            highest += bool(float(s.iloc[0]) > others.max())
    if not cells:
        return "inconclusive", "SELU and the other activations never share a seed and subset size"
    d = pd.DataFrame(cells, columns=["n_train", "seed", "diff"]).groupby("seed")["diff"].mean()
    n, mean, _, low, high, _, _ = _interval(d, confidence)
    selu = pr.loc[pr["activation"] == "selu", "start_loss"].mean()
    other = pr.loc[pr["activation"] != "selu"].groupby("activation")["start_loss"].mean()
    if n < 2:
        verdict = "inconclusive"
    elif low > 0 and mean > margin:
        verdict = "supported"
    elif high < margin:  # at most negligibly higher
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    ev = (f"{_seed_note(n)}epoch-0 train loss: SELU {fmt(selu)} vs median of "
          f"{len(other)} others {fmt(other.median())}; SELU minus others' median: "
          f"{_interval_text(n, mean, low, high)} (under {margin:g} nats counts as no "
          f"difference); SELU highest of all in {highest}/{len(cells)} seed x subset cells")
    return verdict, ev


def _claim_b(pr: pd.DataFrame, absent: str):
    if "selu" not in set(pr["activation"]):
        return "inconclusive", absent
    hits, cells, ranks = 0, 0, {"final_train_loss": [], "final_test_loss": []}
    n_act = pr["activation"].nunique()
    if n_act < 3:
        return "inconclusive", f"only {n_act} activation(s): 'among the lowest' needs at least 3"
    for _, g in pr.groupby(["n_train", "seed"]):
        for metric in ranks:
            vals = g.groupby("activation")[metric].mean()
            vals = vals[np.isfinite(vals)]
            if "selu" not in vals.index or len(vals) < 3:
                continue
            rank = vals.rank(method="min")["selu"]
            top = math.ceil(len(vals) / 3)
            ranks[metric].append((rank, len(vals)))
            hits += bool(rank <= top)
            cells += 1
    n_seeds = pr.loc[pr["activation"] == "selu", "seed"].nunique()
    if not cells:
        return "inconclusive", "no seed and subset size where SELU and two others all finished"
    share = hits / cells
    parts = []
    for metric, label in (("final_train_loss", "train"), ("final_test_loss", "test")):
        r = ranks[metric]
        if r:
            parts.append(f"final {label} loss: SELU's mean rank {np.mean([x for x, _ in r]):.1f} "
                         f"of {max(m for _, m in r)}")
    ev = (f"{_seed_note(n_seeds)}SELU in the lowest third in {hits}/{cells} seed x subset x "
          f"(train, test) cells ({share:.0%}); " + "; ".join(parts))
    if n_seeds < 2:
        return "inconclusive", ev
    verdict = "supported" if share >= 0.75 else "not supported" if share <= 0.25 else "inconclusive"
    return verdict, ev


def _claim_c(e: pd.DataFrame, gap_tolerance: float, confidence: float):
    trained = e[e["epoch"] >= 1].assign(gap=lambda d: d["test_loss"] - d["train_loss"])
    if trained.empty:
        return "inconclusive", "no trained epochs"
    per_run = []
    for rid, g in trained.groupby("run_id"):
        g = g[np.isfinite(g["gap"])]
        slope = (stats.linregress(g["epoch"], g["gap"]).slope
                 if len(g) >= 2 and np.ptp(g["epoch"]) > 0 else np.nan)
        last = g.loc[g["epoch"].idxmax()] if len(g) else None
        per_run.append((g["activation"].iloc[0] if len(g) else None,
                        g["n_train"].iloc[0] if len(g) else None,
                        float(last["gap"]) if last is not None else np.nan, slope))
    pr = pd.DataFrame(per_run, columns=["activation", "n_train", "gap", "slope"]).dropna(
        subset=["activation"])
    over, evaluable, worst = [], 0, None
    for (act, n_train), g in pr.groupby(["activation", "n_train"]):
        n, mean_slope, _, low, high, _, _ = _interval(g["slope"], confidence)
        gap = g["gap"].mean()
        if worst is None or gap > worst[2]:
            worst = (act, n_train, gap, mean_slope, low, high, n)
        if n < 2:
            continue
        evaluable += 1
        if gap > gap_tolerance and low > 0:
            over.append(f"{act} n={n_train}: gap {fmt(gap)}, growing {fmt(mean_slope)}/epoch "
                        f"[{fmt(low)}, {fmt(high)}]")
    total = len(pr.groupby(["activation", "n_train"]))
    head = (f"final gap (test minus train loss) up to {fmt(worst[2])} nats ({worst[0]}, "
            f"n={worst[1]}; gap slope {_interval_text(worst[6], worst[3], worst[4], worst[5], '/epoch')})"
            if worst else "")
    if over:
        return "not supported", (f"{len(over)}/{evaluable} configurations overfit (gap > "
                                 f"{gap_tolerance} nats and growing): " + "; ".join(over[:6]))
    if evaluable == 0:
        return "inconclusive", (f"no configuration with 2+ seeds and 2+ trained epochs; {head}")
    missing = total - evaluable
    return "supported", (f"in none of {evaluable} configurations is the gap both above "
                         f"{gap_tolerance} nats and growing; {head}"
                         + (f"; {missing} configurations with one seed not judged" if missing else ""))


def _claim_d(fits, pr, on_logits: int, flat_ratio: float, confidence: float, absent: str):
    if fits is None or "sigmoid" not in set(pr["activation"]):
        return "inconclusive", absent
    if pr["activation"].nunique() < 2:
        return "inconclusive", "sigmoid is the only activation: nothing to compare with"
    cells, parts = [], []
    for (curve, n_train), g in fits.groupby(["curve", "n_train"], sort=False):
        sig = g.loc[g["activation"] == "sigmoid", "slope"]
        others = g.loc[g["activation"] != "sigmoid"].groupby("activation")["slope"].mean()
        if sig.empty or others.empty:
            continue
        band = flat_ratio * abs(float(others.median()))
        n, mean, _, low, high, _, _ = _interval(sig, confidence)
        if n < 2:
            v = "inconclusive"
        elif -band <= low and high <= band:
            v = "supported"
        elif low > band or high < -band:
            v = "not supported"
        else:
            v = "inconclusive"
        cells.append(v)
        ci = f" [{fmt(low)}, {fmt(high)}]" if n >= 2 else " (one seed)"
        parts.append(f"{curve.replace('_loss', '')} n={n_train}: sigmoid {fmt(mean)}{ci} vs "
                     f"others' median {fmt(others.median())} (flat band ±{fmt(band)})")
    if not cells:
        return "inconclusive", "sigmoid and other activations never share a subset size"
    n_seeds = pr.loc[pr["activation"] == "sigmoid", "seed"].nunique()
    verdict = _majority(cells)
    ev = (f"{_seed_note(n_seeds)}slope of epoch loss (nats/epoch, epochs 0..end): " + "; ".join(parts))
    if len(set(cells)) > 1:
        ev += f" — cells disagree ({', '.join(f'{cells.count(v)} {v}' for v in VERDICTS if v in cells)})"
    if on_logits:
        lo, hi = BOUNDED_RANGE["sigmoid"]
        n_classes = n_classes_of(pr)
        floor = logit_loss_floor(lo, hi, n_classes)
        final = pr.loc[pr["activation"] == "sigmoid", "final_train_loss"].mean()
        start = pr.loc[pr["activation"] == "sigmoid", "start_loss"].mean()
        ev += (f". Sigmoid on the logits keeps them in (0, 1), so cross-entropy cannot fall "
               f"below {floor:.3f} nats on {n_classes} classes; sigmoid's final train loss is "
               f"{fmt(final)}")
        if final - floor < 0.25 * (start - floor):
            ev += ", pinned near that floor: the flat line is the bound, not only saturation"
        else:
            ev += ", well above that floor: the bound does not explain the flat line"
    return verdict, ev


def _majority(cells: list) -> str:
    """One verdict from several cells: unanimous, or 3 in 4 with none saying the opposite."""
    for v, opposite in (("supported", "not supported"), ("not supported", "supported")):
        if cells.count(v) >= 0.75 * len(cells) and opposite not in cells:
            return v
    return "inconclusive"


def _claim_e(pr: pd.DataFrame, stagnation_drop: float, confidence: float, absent: str):
    if "sigmoid" not in set(pr["activation"]):
        return "inconclusive", absent
    drop = (pr["start_loss"] - pr["final_train_loss"]) / pr["start_loss"]
    pr = pr.assign(drop=drop)
    sig = pr[pr["activation"] == "sigmoid"].groupby("seed")["drop"].mean()
    n, mean, _, low, high, _, _ = _interval(sig, confidence)
    others = pr[pr["activation"] != "sigmoid"].groupby("activation")["drop"].mean()
    acc = pr.loc[pr["activation"] == "sigmoid", "final_test_accuracy"].mean()
    ev = (f"{_seed_note(n)}relative fall of train loss from epoch 0 to the end: sigmoid "
          f"{_interval_text(n, mean, low, high)}; stagnation means below {stagnation_drop:.0%}"
          + (f"; median of {len(others)} others {fmt(others.median())}" if len(others) else "")
          + f"; sigmoid's final test accuracy {acc:.1%}")
    if n < 2:
        return "inconclusive", ev
    verdict = ("supported" if high < stagnation_drop else
               "not supported" if low > stagnation_drop else "inconclusive")
    return verdict, ev


def _claim_f(batches, epochs, meta, k: float, window: int):
    if batches.empty:
        return "inconclusive", "no batch losses stored"
    spikes = detect_spikes(batches, epochs, k=k, window=window)
    n_runs = batches["run_id"].nunique()
    models = ", ".join(sorted(batches["model"].unique()))
    if spikes.empty:
        return "not supported", (f"no batch loss above median + {k:g} x MAD of its previous "
                                 f"{window} in {n_runs} runs ({models})")
    spikes = spikes.join(meta["status"], on="run_id")
    kept = spikes["recovered"] & spikes["test_unchanged"].fillna(False).astype(bool) & (
        spikes["status"] == "done")
    by_act = spikes.assign(kept=kept).groupby("activation").agg(
        n=("step", "size"), runs=("run_id", "nunique"), top=("loss", "max"), kept=("kept", "sum"))
    listing = "; ".join(f"{r.Index}: {r.n} in {r.runs} run(s), highest {fmt(r.top)}, "
                        f"{int(r.kept)} left the epoch test loss unchanged"
                        for r in by_act.sort_values("top", ascending=False).itertuples())
    moved = int(spikes["moved"].sum())
    share = kept.mean()
    ev = (f"{len(spikes)} spike(s) (> median + {k:g} x MAD of the previous {window} losses) in "
          f"{spikes['run_id'].nunique()}/{n_runs} runs ({models}); {kept.sum()} ({share:.0%}) "
          f"recovered with the test loss after their epoch not up by more than 10%; "
          f"{moved} pulled their epoch's mean batch loss beyond 2 standard errors. By activation: "
          + listing)
    return ("supported" if share >= 0.5 else "not supported"), ev


# -- helpers -----------------------------------------------------------------------------

def _need(df: pd.DataFrame, name: str, columns) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}; it has: "
                         f"{', '.join(map(str, df.columns))}")


def fmt(x) -> str:
    """A number for evidence text: 3 significant digits, scientific when huge or tiny."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    x = float(x)
    if not math.isfinite(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.2e}"
    return f"{x:#.3g}".rstrip(".")
