"""Learning curves in n: how the final loss falls with the training-set size, per activation.

Pure functions on the per-run table (`analysis.run_metrics`): a power law
`L(n) = a * n^(-b) + c` through the across-seed means (Hestness et al. 2017: error falls as a
power of n), bootstrap intervals over seeds for the exponent, the n needed to reach a target
accuracy (interpolated in log n), and a permutation test of whether the activations'
comparison changes with n (activation x n interaction, seeds as blocks).
"""
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .tables import need

FORMS = ("a*n^-b+c", "a*n^-b")
MIN_SIZES = 3          # a curve in n needs three sizes; the offset c needs a fourth
TARGETS = (0.8, 0.9)   # test accuracies whose samples-to-target the report gives
N_BOOT = 1000
# The offset c is profiled over this many values in [0, min loss): each is a straight line
# in log-log space, so the fit is exact least squares on the log scale for every c.
C_GRID = 200


def fit_power_law(n, y, *, offset: bool | None = None) -> dict:
    """Least-squares fit of log y on log n, `y = a n^-b + c`, c profiled over a grid.

    `offset` None chooses: c is fitted with 4+ sizes and kept when it lies strictly inside
    [0, 0.95 min y) (at either edge it cannot be told from 0 or from the smallest loss, so
    the two-parameter form is reported); True or False forces a form. Returns a, b, c
    (0 in the two-parameter form), form, rmse (of log y).
    """
    n, y = np.asarray(n, float), np.asarray(y, float)
    ok = np.isfinite(n) & np.isfinite(y) & (n > 0) & (y > 0)
    n, y = n[ok], y[ok]
    out = dict(a=np.nan, b=np.nan, c=np.nan, form="", rmse=np.nan)
    if len(np.unique(n)) < 2:
        return out
    x = np.log(n)
    cs = np.array([0.0])
    if offset is not False and (offset or len(np.unique(n)) >= MIN_SIZES + 1):
        cs = np.linspace(0.0, y.min(), C_GRID, endpoint=False)
    slope, icpt, sse = _loglog(x, y[None, :] - cs[:, None])
    best = int(np.nanargmin(sse))
    if offset is None and not (0 < cs[best] < 0.95 * y.min()):
        best = 0
        cs = np.array([0.0])
        slope, icpt, sse = _loglog(x, y[None, :])
    c = float(cs[best])
    out.update(a=float(np.exp(icpt[best])), b=float(-slope[best]), c=c,
               form=FORMS[0] if c > 0 or offset else FORMS[1],
               rmse=float(math.sqrt(sse[best] / len(x))))
    return out


def _loglog(x: np.ndarray, ys: np.ndarray):
    """Slope, intercept and log-space SSE of log(ys[i]) on x, for every row i."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ly = np.log(ys)
    xm = x - x.mean()
    slope = (ly - ly.mean(axis=1, keepdims=True)) @ xm / (xm @ xm)
    icpt = ly.mean(axis=1) - slope * x.mean()
    sse = np.sum((ly - (icpt[:, None] + slope[:, None] * x)) ** 2, axis=1)
    return slope, icpt, np.where(np.isfinite(sse), sse, np.nan)


def n_to_target(n, accuracy, target: float) -> tuple[float, str]:
    """The smallest n at which a curve reaches `target`, interpolated linearly in log n.

    Returns (n, status): status 'reached', 'at smallest n' (already there at the first
    size: n is that size, an upper bound) or 'not reached' (n NaN).
    """
    order = np.argsort(n)
    n, acc = np.asarray(n, float)[order], np.asarray(accuracy, float)[order]
    if not len(n) or not np.isfinite(acc).any():
        return np.nan, "not reached"
    if acc[0] >= target:
        return float(n[0]), "at smallest n"
    for i in range(1, len(n)):
        if acc[i] >= target:
            t = (target - acc[i - 1]) / (acc[i] - acc[i - 1])
            return float(np.exp(np.log(n[i - 1]) + t * (np.log(n[i]) - np.log(n[i - 1])))), "reached"
    return np.nan, "not reached"


def learning_curves(per_run: pd.DataFrame, *, metric: str = "final_test_loss",
                    accuracy: str = "final_test_accuracy", targets=TARGETS, n_boot: int = N_BOOT,
                    confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per (model, activation) with 3+ sizes: power-law fit of `metric` in n_train.

    Needs `per_run`: model, activation, seed, n_train, `metric`, `accuracy`. The fit goes
    through the across-seed means at each n; the intervals resample seeds (a seed keeps
    all its sizes: its subsets are nested) `n_boot` times with the form of the point fit.
    Columns: model, activation, n_sizes, n_min, n_max, n_seeds, a, b, b_low, b_high, c,
    form, rmse, err_b, err_b_low, err_b_high (the same fit on the test error), and for each
    target t (as a percentage p): n_to_p, n_to_p_low, n_to_p_high, n_to_p_status.
    """
    need(per_run, "per_run", ["model", "activation", "seed", "n_train", metric, accuracy])
    alpha = (1 - confidence) / 2
    rows = []
    for (model, act), g in per_run.groupby(["model", "activation"], sort=True):
        loss = g.pivot_table(index="seed", columns="n_train", values=metric, aggfunc="mean")
        acc = g.pivot_table(index="seed", columns="n_train", values=accuracy, aggfunc="mean")
        if loss.shape[1] < MIN_SIZES:
            continue
        ns = loss.columns.to_numpy(float)
        fit = fit_power_law(ns, loss.mean().to_numpy())
        err_fit = fit_power_law(ns, 1 - acc.mean().to_numpy())
        picks = np.random.default_rng(seed).integers(0, len(loss), size=(n_boot, len(loss)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample may miss a size
            loss_boot = np.nanmean(loss.to_numpy(float)[picks], axis=1)
            acc_boot = np.nanmean(acc.to_numpy(float)[picks], axis=1)
        b_boot = _exponents(ns, loss_boot, fit["form"] == FORMS[0])
        eb_boot = _exponents(ns, 1 - acc_boot, err_fit["form"] == FORMS[0])
        reach_boot = {t: [n_to_target(ns, a, t)[0] for a in acc_boot] for t in targets}
        row = dict(model=model, activation=act, n_sizes=len(ns), n_min=int(ns.min()),
                   n_max=int(ns.max()), n_seeds=len(loss), **{k: fit[k] for k in
                                                              ("a", "b", "c", "form", "rmse")})
        row["b_low"], row["b_high"] = _quantiles(b_boot, alpha)
        row["err_b"] = err_fit["b"]
        row["err_b_low"], row["err_b_high"] = _quantiles(eb_boot, alpha)
        for t in targets:
            key = f"n_to_{round(t * 100)}"
            value, status = n_to_target(ns, acc.mean().to_numpy(), t)
            boot = np.asarray(reach_boot[t], float)
            # A resample that never reaches the target has no n: its share counts as above
            # every size, so the interval's upper end is open (inf) once that share passes alpha.
            boot = np.where(np.isfinite(boot), boot, np.inf)
            # inverted_cdf: an order statistic, so an open end stays inf instead of inf - inf
            low, high = (np.quantile(boot, [alpha, 1 - alpha], method="inverted_cdf") if len(boot)
                         else (np.nan, np.nan))
            row.update({key: value, f"{key}_low": float(low), f"{key}_high": float(high),
                        f"{key}_status": status})
        rows.append(row)
    cols = ["model", "activation", "n_sizes", "n_min", "n_max", "n_seeds", "a", "b", "b_low",
            "b_high", "c", "form", "rmse", "err_b", "err_b_low", "err_b_high"]
    for t in targets:
        key = f"n_to_{round(t * 100)}"
        cols += [key, f"{key}_low", f"{key}_high", f"{key}_status"]
    return pd.DataFrame(rows, columns=cols)


def _exponents(n: np.ndarray, ys: np.ndarray, offset: bool) -> np.ndarray:
    """The exponent b of the fit of every row of ys (resamples), in the given form, at once."""
    x = np.log(n)
    ys = np.where(ys > 0, ys, np.nan)
    if not offset:
        slope, _, _ = _loglog(x, ys)
        return -slope
    cs = np.linspace(0.0, 1.0, C_GRID, endpoint=False)[None, :] * np.nanmin(ys, axis=1)[:, None]
    slope, _, sse = _loglog(x, (ys[:, None, :] - cs[:, :, None]).reshape(-1, len(x)))
    slope, sse = slope.reshape(cs.shape), sse.reshape(cs.shape)
    best = np.nanargmin(np.where(np.isfinite(sse), sse, np.inf), axis=1)
    return -slope[np.arange(len(ys)), best]


def _quantiles(values, alpha: float) -> tuple[float, float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return np.nan, np.nan
    low, high = np.quantile(v, [alpha, 1 - alpha])
    return float(low), float(high)


def curve_points(per_run: pd.DataFrame, fits: pd.DataFrame, *, metric: str = "final_test_loss",
                 points: int = 50) -> pd.DataFrame:
    """The fitted curves on a log grid of n, for the figure: model, activation, n, fit."""
    rows = []
    for f in fits.itertuples():
        if not np.isfinite(f.b):
            continue
        grid = np.geomspace(f.n_min, f.n_max, points)
        for n in grid:
            rows.append((f.model, f.activation, n, f.a * n ** -f.b + f.c))
    return pd.DataFrame(rows, columns=["model", "activation", "n", "fit"])


def interaction_test(per_run: pd.DataFrame, metric: str = "final_test_loss", *,
                     n_perm: int = 2000, seed: int = 0) -> dict:
    """Does the comparison of activations change with n? A permutation test of the
    activation x n interaction, with (seed, n) as blocks.

    Needs `per_run`: activation, seed, n_train, `metric`; uses the seeds that ran every
    activation at every size. The statistic is the interaction sum of squares of the
    table of mean activation contrasts (each (seed, n) block centred); its null distribution
    permutes the sizes of each seed's contrast vectors (exact when, without an interaction,
    a seed's contrasts are exchangeable across sizes).
    Returns statistic, p, n_seeds, n_activations, n_sizes (p NaN when there is too little).
    """
    need(per_run, "per_run", ["activation", "seed", "n_train", metric])
    cube = per_run.pivot_table(index=["seed", "n_train"], columns="activation", values=metric,
                               aggfunc="mean")
    cube = cube.where(np.isfinite(cube))
    sizes = sorted(per_run["n_train"].unique())
    acts = list(cube.columns)
    complete = [s for s in cube.index.get_level_values(0).unique()
                if all((s, n) in cube.index and cube.loc[(s, n)].notna().all() for n in sizes)]
    out = dict(statistic=np.nan, p=np.nan, n_seeds=len(complete), n_activations=len(acts),
               n_sizes=len(sizes))
    if len(complete) < 2 or len(acts) < 2 or len(sizes) < 2:
        return out
    y = np.stack([cube.loc[[(s, n) for n in sizes]].to_numpy() for s in complete]).astype(float)
    # Each seed's activation contrasts at each size (its block mean removed): without an
    # interaction they are the same at every size up to noise, so a seed's sizes can be
    # shuffled as whole contrast vectors; an interaction lines up across seeds only unshuffled.
    d = y - y.mean(axis=2, keepdims=True)
    stat = _interaction_ss(d)
    rng = np.random.default_rng(seed)
    count = 0
    tol = 1e-9 * float(np.sum(d ** 2))  # rounding: an exactly additive table gives p = 1
    for _ in range(n_perm):
        perm = np.stack([d[i, rng.permutation(d.shape[1])] for i in range(d.shape[0])])
        count += _interaction_ss(perm) >= stat - tol
    out.update(statistic=float(stat), p=(count + 1) / (n_perm + 1))
    return out


def _interaction_ss(d: np.ndarray) -> float:
    """Interaction sum of squares of the (size x activation) means over seeds of contrasts."""
    m = d.mean(axis=0)
    return float(d.shape[0] * np.sum((m - m.mean(axis=0, keepdims=True)) ** 2))


def rank_change(per_run: pd.DataFrame, metric: str = "final_test_loss", *, places: int = 2) -> dict:
    """Kendall's tau between the rankings (by across-seed mean) at the smallest and the
    largest n, and the activations whose rank moves by `places` or more."""
    need(per_run, "per_run", ["activation", "n_train", metric])
    sizes = sorted(per_run["n_train"].unique())
    if len(sizes) < 2:
        return dict(tau=np.nan, p=np.nan, n_small=np.nan, n_large=np.nan, moved={})
    means = per_run.groupby(["n_train", "activation"])[metric].mean().unstack()
    small, large = means.loc[sizes[0]], means.loc[sizes[-1]]
    both = pd.concat([small, large], axis=1).dropna()
    r_small, r_large = both.iloc[:, 0].rank(method="min"), both.iloc[:, 1].rank(method="min")
    tau, p = (stats.kendalltau(r_small, r_large) if len(both) >= 2 else (np.nan, np.nan))
    moved = {a: (int(r_small[a]), int(r_large[a])) for a in both.index
             if abs(r_small[a] - r_large[a]) >= places}
    return dict(tau=float(tau), p=float(p), n_small=sizes[0], n_large=sizes[-1], moved=moved,
                rank_small=r_small.astype(int).to_dict(), rank_large=r_large.astype(int).to_dict())
