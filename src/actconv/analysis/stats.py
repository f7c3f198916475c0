"""Pure functions on the long tables: convergence metrics, fits, statistics, spikes.

Nothing here reads or writes files, and nothing here judges a claim (that is `claims/`).
Every function takes DataFrames of the data contract (docs in DESIGN.md: `runs`, `epochs`,
`batches`) and returns a new DataFrame; its docstring names the columns it needs.
Statistics over seeds take `{condition: values}`.
"""
import functools
import math
import warnings
from itertools import combinations
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .tables import CONFIG_KEYS, RUN_KEYS, need, per_run, prefetch

# Below this many seeds a bootstrap interval is too coarse (5 values have few distinct
# resamples), so a t-interval is used instead; rliable bootstraps from 5 runs up as well.
MIN_BOOTSTRAP = 5
# A flat loss series has MAD 0, which would make every wiggle a spike: floor it at 1% of
# the baseline.
MAD_FLOOR = 0.01


# -- per run ---------------------------------------------------------------------------

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
    need(epochs, "epochs", RUN_KEYS + ["epoch", "train_loss", "train_accuracy", "test_loss",
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
    if batches is not None:  # a DataFrame, or rows left in the store: a chunk of runs at a time
        steps = per_run(batches, *_steps_pass(threshold, smooth), BATCH_COLUMNS)
        out = out.join(steps.set_index("run_id"))
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
    need(batches, "batches", ["run_id", "step", "loss"])
    if smooth < 1:
        raise ValueError(f"smooth must be a positive number of batches, got {smooth}")
    b = batches.sort_values(["run_id", "step"])
    # Trailing means of `smooth` losses over all runs at once (a rolling mean per run took
    # 1 ms): a window counts where it lies inside one run and holds no NaN (min_periods).
    loss = b["loss"].to_numpy(float)
    code = pd.factorize(b["run_id"])[0]
    smoothed = np.full(len(b), np.nan)
    if len(b) >= smooth:
        windows = np.lib.stride_tricks.sliding_window_view(loss, smooth)
        with np.errstate(invalid="ignore", over="ignore"):
            means = windows.mean(axis=1)
        inside = code[smooth - 1:] == code[:len(code) - smooth + 1]
        smoothed[smooth - 1:] = np.where(inside, means, np.nan)
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
    for every finite batch loss; slope and intercept are the least-squares line's
    (`np.polyfit(x, y, 1)`, within rounding).
    """
    need(epochs, "epochs", ["run_id", "epoch", "train_loss"])
    need(batches, "batches", RUN_KEYS + ["step", "loss"])
    b = batches.sort_values(["run_id", "step"])
    keys = b.drop_duplicates("run_id")[RUN_KEYS].reset_index(drop=True)
    start = epochs[epochs["epoch"] == 0].set_index("run_id")["train_loss"].reindex(keys["run_id"])
    has = start.notna().to_numpy()
    # Every run at once, as centred sums per run (a polyfit per run took 7 ms: 12 minutes
    # for the 100,000 runs a cluster trains in an hour); equal to polyfit's within rounding.
    code = np.r_[np.flatnonzero(has), pd.Index(keys["run_id"]).get_indexer(b["run_id"])]
    x = np.r_[np.zeros(has.sum()), b["step"].to_numpy(float)]
    y = np.r_[start.to_numpy(float)[has], b["loss"].to_numpy(float)]
    ok = np.isfinite(y)
    code, x, y = code[ok], x[ok], y[ok]
    runs = len(keys)
    n = np.bincount(code, minlength=runs)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = np.bincount(code, x, runs) / n
        ym = np.bincount(code, y, runs) / n
        dx, dy = x - xm[code], y - ym[code]
        sxx = np.bincount(code, dx * dx, runs)
        fit = (n >= 2) & (sxx > 0)
        slope = np.where(fit, np.bincount(code, dx * dy, runs) / sxx, np.nan)
        intercept = np.where(fit, ym - slope * xm, np.nan)
        resid = y - (slope[code] * x + intercept[code])
        ss_tot = np.bincount(code, dy * dy, runs)
        r2 = np.where(fit & (ss_tot > 0), 1 - np.bincount(code, resid * resid, runs) / ss_tot, np.nan)
    return keys.assign(n_points=n, slope=slope, intercept=intercept, r2=r2)


def epoch_fits(epochs: pd.DataFrame, *, curves=("train_loss", "test_loss"), first_epoch: int = 0,
               confidence: float = 0.95) -> pd.DataFrame:
    """Least-squares line of each epoch loss curve against epoch, per run and curve.

    Needs `epochs`: run_id, model, activation, seed, n_train, epoch and the `curves`
    columns. Returns slope (loss per epoch), intercept, r2, the slope's standard error
    and its `confidence` interval (t with n-2 degrees of freedom, as scipy's linregress
    gives the standard error); stderr and interval are NaN below three points, r2 and
    stderr NaN for a flat curve.
    """
    need(epochs, "epochs", RUN_KEYS + ["epoch", *curves])
    e = epochs[epochs["epoch"] >= first_epoch]
    runs = e.drop_duplicates("run_id").sort_values("run_id")[RUN_KEYS].reset_index(drop=True)
    code = pd.Index(runs["run_id"]).get_indexer(e["run_id"])
    x_all = e["epoch"].to_numpy(float)
    parts = []
    # All runs at once, as linregress computes one: centred sums per run (a linregress call
    # per run and curve took 0.45 s on the seed preset, and the report fits twice).
    for curve in curves:
        y = e[curve].to_numpy(float)
        ok = np.isfinite(y)
        g, x, y = code[ok], x_all[ok], y[ok]
        sums = lambda v: np.bincount(g, v, minlength=len(runs))  # noqa: E731
        n = np.bincount(g, minlength=len(runs)).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            xm, ym = sums(x) / n, sums(y) / n
            dx, dy = x - xm[g], y - ym[g]
            sxx, sxy, syy = sums(dx * dx), sums(dx * dy), sums(dy * dy)
            fit = (n >= 2) & (_ranges(g, x, len(runs)) > 0)
            slope = np.where(fit, sxy / sxx, np.nan)
            # A flat curve has no correlation (linregress's answer there is rounding noise).
            r = np.where(_ranges(g, y, len(runs)) > 0, np.clip(sxy / np.sqrt(sxx * syy), -1, 1),
                         np.nan)
            stderr = np.where(fit & (n >= 3), np.sqrt((1 - r ** 2) * syy / sxx / (n - 2)), np.nan)
            t = stats.t.ppf((1 + confidence) / 2, np.maximum(n - 2, 1))
            parts.append(runs.assign(
                curve=curve, n_points=n.astype(int), slope=slope,
                intercept=np.where(fit, ym - slope * xm, np.nan), r2=np.where(fit, r ** 2, np.nan),
                stderr=stderr, slope_low=slope - t * stderr, slope_high=slope + t * stderr))
    cols = RUN_KEYS + ["curve", "n_points", "slope", "intercept", "r2", "stderr", "slope_low",
                       "slope_high"]
    if not parts or runs.empty:
        return pd.DataFrame(columns=cols)
    order = np.argsort(np.tile(np.arange(len(runs)), len(parts)), kind="stable")
    return pd.concat(parts, ignore_index=True).iloc[order].reset_index(drop=True)[cols]


def _ranges(group: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """max - min of `x` per group (0 for an empty group)."""
    hi, lo = np.full(n, -np.inf), np.full(n, np.inf)
    np.maximum.at(hi, group, x)
    np.minimum.at(lo, group, x)
    return np.where(np.isfinite(hi), hi - lo, 0.0)


# -- statistics across seeds -------------------------------------------------------------

def interval_estimates(scores: Mapping[str, object], *, confidence: float = 0.95,
                       n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean, sd and interval of each condition's values (one value per seed).

    Takes `{condition: values}`; non-finite values are dropped and `n` counts the rest.
    The interval is a t-interval below 5 values and a percentile bootstrap of the mean
    (`n_boot` resamples, fixed `seed`) from 5 up; with one value there is none.
    """
    rows = {c: interval(v, confidence, n_boot, seed) for c, v in scores.items()}
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["n", "mean", "sd", "low", "high", "method", "note"])


def metric_bounds(name: str) -> tuple[float, float] | None:
    """The range a metric can take: accuracies and errors in [0, 1], losses and areas under
    loss curves at least 0; None for signed quantities (gaps, slopes, differences)."""
    if "accuracy" in name or name.endswith("error"):
        return (0.0, 1.0)
    if ("loss" in name or name.startswith("auc_")) and "gap" not in name and "slope" not in name:
        return (0.0, math.inf)
    return None


def interval(values, confidence=0.95, n_boot=2000, seed=0, bounds=None) -> tuple:
    """(n, mean, sd, low, high, method, note) for one condition; with `bounds` (lo, hi) the
    interval stays inside the metric's range."""
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
        t = _t_quantile(confidence, n - 1)
        half = t * sd / math.sqrt(n)
        note = "two seeds: the interval is wide" if n == 2 else ""
        low, high = mean - half, mean + half
        if bounds is not None and (low < bounds[0] or high > bounds[1]):
            low, high = _transformed_t(v, t, bounds)
            return n, mean, sd, min(low, mean), max(high, mean), "t (transformed)", note
        return n, mean, sd, low, high, "t", note
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return n, mean, sd, float(low), float(high), "bootstrap", ""


@functools.lru_cache(maxsize=64)
def _t_quantile(confidence: float, df: int) -> float:
    """Student's t quantile of a two-sided `confidence` interval: scipy's ppf costs 50 us a
    call, and a report asks for the same few (3 seeds: df 2) ten thousand times."""
    return float(stats.t.ppf((1 + confidence) / 2, df))


# How far inside its range a value is moved before the logit or log: an accuracy of exactly 0
# or 1 (or a loss of 0) would otherwise send the transformed interval to infinity.
EDGE = 1e-4


def _transformed_t(v: np.ndarray, t: float, bounds) -> tuple[float, float]:
    """A t-interval on the logit scale (range [0, 1]) or log scale (range [0, inf)), mapped
    back: it cannot leave the range, where the plain t-interval at 2-4 seeds often does."""
    lo, hi = bounds
    if math.isinf(hi):
        z = np.log(np.maximum(v - lo, EDGE))
        back = lambda x: lo + float(np.exp(x))  # noqa: E731
    else:
        p = np.clip((v - lo) / (hi - lo), EDGE, 1 - EDGE)
        z = np.log(p / (1 - p))
        back = lambda x: lo + (hi - lo) / (1 + float(np.exp(-x)))  # noqa: E731
    half = t * float(z.std(ddof=1)) / math.sqrt(len(z))
    m = float(z.mean())
    with np.errstate(over="ignore"):
        return float(np.clip(back(m - half), lo, hi)), float(np.clip(back(m + half), lo, hi))


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
    need(per_run, "per_run", by + list(metrics))
    rows = []
    for key, g in per_run.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            n, mean, sd, low, high, method, note = interval(g[m], confidence, n_boot, seed,
                                                             metric_bounds(m))
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
    need(epochs, "epochs", by + ["epoch", *columns])
    rows = []
    for key, g in epochs.groupby(by + ["epoch"], sort=True):
        for c in columns:
            n, mean, _, low, high, _, _ = interval(g[c], confidence, 500, 0, metric_bounds(c))
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
    need(per_run, "per_run", by + ["activation", "seed", metric])
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
    pairs = list(combinations(series, 2))
    rows = []
    if pairs:  # every pair at once: one seed x condition matrix, NaN where a seed is missing
        x = pd.concat(list(series.values()), axis=1, join="outer").astype(float).to_numpy()
        col = {c: k for k, c in enumerate(series)}
        i, j = (np.array([col[p[k]] for p in pairs], dtype=int) for k in (0, 1))
        d = np.where(np.isfinite(x[:, i]) & np.isfinite(x[:, j]), x[:, i] - x[:, j], np.nan)
        n = np.isfinite(d).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN, as wanted
            mean = np.nanmean(d, axis=0)
            sd = np.nanstd(d, axis=0, ddof=1)
            t = np.where(n >= 2, mean / (sd / np.sqrt(n)), np.nan)  # ttest_rel's statistic
            p = np.where(n >= 2, 2 * stats.t.sf(np.abs(t), np.maximum(n - 1, 1)), np.nan)
        rows = [(a, b, int(n[k]), mean[k] if n[k] else np.nan, t[k], p[k])
                for k, (a, b) in enumerate(pairs)]
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
    need(per_run, "per_run", by + ["activation", "seed", metric])
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
    need(batches, "batches", RUN_KEYS + ["epoch", "step", "loss"])
    if window < 1 or min_history < 1 or min_history > window:
        raise ValueError(f"need 1 <= min_history <= window, got min_history={min_history}, "
                         f"window={window}")
    tests = None
    if epochs is not None:
        need(epochs, "epochs", ["run_id", "epoch", "test_loss"])
        tests = epochs.set_index(["run_id", "epoch"])["test_loss"]
    rows = []
    every = batches.sort_values(["run_id", "step"])
    code = pd.factorize(every["run_id"])[0]
    # Every run's baseline at once (a run at a time cost 1 ms); then only the runs with a spike.
    all_base, all_mad = _running_baselines(every["loss"].to_numpy(float), code, window, min_history)
    with np.errstate(invalid="ignore"):
        spiky = np.unique(code[every["loss"].to_numpy(float) > all_base + k * all_mad])
    bounds = np.searchsorted(code, np.arange(code.max() + 2 if len(code) else 0))
    for c in spiky:
        b = every.iloc[bounds[c]:bounds[c + 1]]
        rid = b["run_id"].iloc[0]
        loss = b["loss"].to_numpy(float)
        base, mad = all_base[bounds[c]:bounds[c + 1]], all_mad[bounds[c]:bounds[c + 1]]
        thr = base + k * mad
        with np.errstate(invalid="ignore"):
            is_spike = loss > thr  # NaN threshold (too little history) compares False
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


# -- the per-run batch analyses over rows left in the store ---------------------------------
# Each is a (key, fn) pass: fn maps one chunk of runs' batch rows to one part per run, and
# the key names fn with its parameters, so every caller with the same ones reads the result
# of the one pass (`tables.per_run`).

BATCH_COLUMNS = ("epoch", "step", "loss")  # what the per-run batch analyses read


def _steps_pass(threshold, smooth):
    return (f"steps_to_threshold({threshold!r}, {smooth})",
            lambda b: _steps_to_threshold(b, threshold, smooth).reset_index())


def _spikes_pass(epochs, k, window, test_tolerance):
    def one(b):  # each chunk with its own runs' epochs
        e = None if epochs is None else epochs[epochs["run_id"].isin(b["run_id"].unique())]
        return detect_spikes(b, e, k=k, window=window, test_tolerance=test_tolerance)
    return f"spikes({k!r}, {window}, {test_tolerance!r}, {epochs is not None})", one


def _fits_pass(epochs):
    return "batch_fit", lambda b: batch_fit(epochs, b)


def spikes(batches, epochs: pd.DataFrame | None = None, *, k: float = 10.0, window: int = 50,
           test_tolerance: float = 0.1) -> pd.DataFrame:
    """`detect_spikes` of a batches DataFrame or of rows left in the store."""
    return per_run(batches, *_spikes_pass(epochs, k, window, test_tolerance), BATCH_COLUMNS)


def batch_fits(epochs: pd.DataFrame, batches) -> pd.DataFrame:
    """`batch_fit` of a batches DataFrame or of rows left in the store."""
    return per_run(batches, *_fits_pass(epochs), BATCH_COLUMNS)


def batch_analyses(batches, epochs: pd.DataFrame, *, threshold: float, smooth: int = 10,
                   k: float = 10.0, window: int = 50, test_tolerance: float = 0.1) -> None:
    """Read rows left in the store once for the fits, steps to threshold and spikes that
    `batch_fits`, `run_metrics` and `spikes` then return (nothing to do for a DataFrame)."""
    prefetch(batches, dict([_fits_pass(epochs), _steps_pass(threshold, smooth),
                            _spikes_pass(epochs, k, window, test_tolerance)]), BATCH_COLUMNS)


def _running_baseline(loss: np.ndarray, window: int, min_history: int):
    """Median and MAD of the up to `window` values before each position (NaN if too few)."""
    return _running_baselines(loss, np.zeros(len(loss), dtype=np.int64), window, min_history)


BASELINE_ROWS = 20_000  # batch rows whose windows are held at once (x window x 8 bytes)


def _running_baselines(loss: np.ndarray, code: np.ndarray, window: int, min_history: int):
    """`_running_baseline` of every run at once: `loss` holds the runs one after another in
    step order, `code` each row's run (non-decreasing); a window never reaches into the run
    before."""
    n = len(loss)
    base, mad = np.full(n, np.nan), np.full(n, np.nan)
    padded = np.r_[np.full(window, np.nan), loss]
    owner = np.r_[np.full(window, -1), code]
    for start in range(0, n, BASELINE_ROWS):
        end = min(n, start + BASELINE_ROWS)
        hist = np.lib.stride_tricks.sliding_window_view(padded[start:end + window - 1], window)[:end - start]
        mine = np.lib.stride_tricks.sliding_window_view(owner[start:end + window - 1], window)[:end - start]
        h = np.where(mine == code[start:end, None], hist, np.nan)  # h[i] = the run's loss[i-window:i]
        count = (~np.isnan(h)).sum(axis=1)  # an infinite loss is history
        med, dev = _median_and_mad(h, count)
        ok = count >= min_history
        base[start:end][ok] = med[ok]
        mad[start:end][ok] = np.maximum(dev[ok], MAD_FLOOR * np.abs(med[ok]))
    return base, mad


def _median_and_mad(h: np.ndarray, count: np.ndarray | None = None):
    """Per row of h: the median of its non-NaN values and their median absolute deviation,
    as np.nanmedian gives them (which took 2 ms a run, 4 minutes at 100,000 runs); `count`:
    each row's non-NaN values, where known."""
    med = _row_medians(h, count)
    with np.errstate(invalid="ignore"):
        d = np.abs(h - med[:, None])  # inf - inf is a NaN, left out as there
    return med, _row_medians(d)


def _row_medians(h: np.ndarray, count: np.ndarray | None = None) -> np.ndarray:
    """np.nanmedian(h, axis=1) from one sort: NaNs sort last, so a row's c non-NaN values
    come first, and its median is the mean of the middle one or two, as np.median takes it."""
    s = np.sort(h, axis=1)
    c = (~np.isnan(h)).sum(axis=1) if count is None else count
    rows = np.arange(len(h))
    lo, hi = np.maximum(c - 1, 0) // 2, np.minimum(c // 2, max(h.shape[1] - 1, 0))
    a, b = s[rows, lo], s[rows, hi]
    with np.errstate(invalid="ignore"):
        out = np.where(lo == hi, a, (a + b) / 2)
    out[c == 0] = np.nan
    return out
