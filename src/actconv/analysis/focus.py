"""The user's question first: one activation (`--focus NAME`, or each user-defined one) at
every training-set size, its rank among all activations and its paired difference in test
loss against the best built-in over the same seeds, with a 95% interval and a Holm-adjusted
p over the sizes (and conditions) compared, and a verdict: better, worse or cannot tell."""
import numpy as np
import pandas as pd
from scipy import stats

from .stats import holm
from .tuning import fixed_label
from .tables import need

COLUMNS = ["focus", "condition", "n_train", "rank", "n_activations", "focus_test_loss", "best_builtin",
           "builtin_test_loss", "n_seeds", "mean_diff", "diff_low", "diff_high", "p", "p_holm", "verdict"]


def focus_table(view: pd.DataFrame, name: str, builtins, *, metric: str = "final_test_loss",
                confidence: float = 0.95, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (condition, n_train) where `name` ran: its rank by mean `metric` among every
    activation, the built-in with the lowest mean, and the paired difference name minus that
    built-in over their common seeds (a t-interval; negative: the focus has the lower loss).

    Needs `view`: condition, n_train, activation, seed and `metric`, one setting per
    (condition, n_train, activation): the confirmed (or tuned, or fixed) runs. The best built-in
    is chosen on the same seeds it is compared on, so "better" is a conservative verdict.
    """
    need(view, "view", ["condition", "n_train", "activation", "seed", metric])
    builtins = set(builtins) - {name}
    rows = []
    for (cond, n), g in view.groupby(["condition", "n_train"], sort=True):
        if name not in set(g["activation"]):
            continue
        per_seed = g.groupby(["activation", "seed"])[metric].mean().unstack("activation")
        means = per_seed.mean()
        rank = int(means.rank(method="min")[name]) if np.isfinite(means[name]) else np.nan
        row = dict(focus=name, condition=cond, n_train=n, rank=rank, n_activations=int(means.notna().sum()),
                   focus_test_loss=means[name])
        others = means[[a for a in means.index if a in builtins]].dropna()
        if others.empty:
            rows.append(row)
            continue
        best = others.idxmin()
        d = (per_seed[name] - per_seed[best]).dropna().to_numpy(dtype=float)
        row.update(best_builtin=best, builtin_test_loss=means[best], n_seeds=len(d))
        if len(d):
            row["mean_diff"] = float(d.mean())
        if len(d) >= 2:
            se = d.std(ddof=1) / np.sqrt(len(d))
            half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * se
            row.update(diff_low=row["mean_diff"] - half, diff_high=row["mean_diff"] + half,
                       p=float(stats.ttest_1samp(d, 0.0).pvalue) if se > 0 else
                       (1.0 if row["mean_diff"] == 0 else 0.0))
        rows.append(row)
    out = pd.DataFrame(rows).reindex(columns=COLUMNS)
    if out.empty:
        return out
    out["p_holm"] = holm(out["p"].to_numpy(dtype=float))
    out["verdict"] = [("better" if m < 0 else "worse") if p < alpha else "cannot tell"
                      for m, p in zip(out["mean_diff"], out["p_holm"].fillna(1.0))]
    return out


def focus_tables(view: pd.DataFrame, names, builtins, **kw) -> pd.DataFrame:
    """`focus_table` for each name, one table."""
    parts = [focus_table(view, n, builtins, **kw) for n in names]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


def user_defined(runs: pd.DataFrame) -> list[str]:
    """The activations a user defined (an expression, `module:attr`), read from `runs.config_json`."""
    if "config_json" not in runs or runs.empty:
        return []
    mine = runs[runs["config_json"].str.contains('"activation_def"', regex=False, na=False)]
    return sorted(mine["activation"].unique())


def view(per_run: pd.DataFrame, *, tuned_ids: pd.Series | None = None, confirmed: pd.DataFrame | None = None,
         axes=()) -> pd.DataFrame:
    """The runs a focus table reads, with a `condition` column: the confirm runs after a search
    (`confirmed`, from `confirm.confirm_runs`), else the runs at each tuned choice (`tuned_ids`:
    run_id -> condition, from `tuning.tuned_runs`), else every run by its full condition."""
    if confirmed is not None:
        return confirmed
    if tuned_ids is not None and len(tuned_ids):
        p = per_run[per_run["run_id"].isin(tuned_ids.index)]
        return p.assign(condition=p["run_id"].map(tuned_ids))
    return per_run.assign(condition=fixed_label(per_run, ()))


def with_samples_to_target(table: pd.DataFrame, curves: pd.DataFrame | None, target: int = 80) -> pd.DataFrame:
    """`table` with the images each activation needs to reach `target`% test accuracy from
    the learning curves (`n_to_<target>`: the focus; `builtin_n_to_<target>`: that row's best
    built-in); NaN where no curve was fitted (fewer than three sizes)."""
    col = f"n_to_{target}"
    table = table.copy()
    if curves is None or curves.empty or col not in curves:
        table[col] = table[f"builtin_{col}"] = np.nan
        return table
    n = curves.set_index(["model", "activation"])[col]
    table[col] = [n.get((c, a), np.nan) for c, a in zip(table["condition"], table["focus"])]
    table[f"builtin_{col}"] = [n.get((c, a), np.nan) for c, a in zip(table["condition"], table["best_builtin"])]
    return table
