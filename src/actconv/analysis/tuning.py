"""Tuning per activation: choose each activation's training settings on the validation split.

A comparison at one fixed learning rate measures the activation and its preferred step size
at once. `tune` picks, for every (condition, n_train, activation), the value of the tuned
axes with the best mean validation score over seeds (AlgoPerf's rule: select on validation,
score on test), and reports the test metrics at that choice. The test set is never read
before the choice is made: `candidates` has no test column.
"""
import numpy as np
import pandas as pd
from scipy import stats

from . import conditions
from .stats import interval
from .tables import need

SELECT = {"val_loss": True, "val_accuracy": False}  # metric -> lower is better
TUNABLE = ("lr", "batch_size", "momentum", "weight_decay", "optimizer", "epochs")
REFERENCE = {"lr": 0.1}  # the notebook's setting: what the unfair comparison used


def final_metrics(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run: its settings, status and first/last epoch metrics.

    Needs `runs` (run_id, status, config_json) and `epochs` (run_id, epoch, train_loss,
    test_loss, test_accuracy and, with a validation split, val_loss, val_accuracy).
    `bad` marks a run that diverged, ended non-finite or ended above its starting loss:
    such a run is the worst possible candidate.
    """
    need(runs, "runs", ["run_id", "status", "config_json"])
    need(epochs, "epochs", ["run_id", "epoch", "train_loss", "test_loss", "test_accuracy"])
    finished = runs[runs["status"].isin(["done", "diverged"])]
    s = conditions.settings(finished)
    e = epochs[epochs["run_id"].isin(finished["run_id"])].sort_values(["run_id", "epoch"])
    cols = [c for c in ("train_loss", "test_loss", "test_accuracy", "val_loss", "val_accuracy")
            if c in e]
    last = e.groupby("run_id")[cols].last().add_prefix("final_")
    start = e[e["epoch"] == 0].set_index("run_id")["train_loss"].rename("start_loss")
    out = s.join(finished.set_index("run_id")["status"]).join(last).join(start)
    for c in ("final_val_loss", "final_val_accuracy"):
        if c not in out:
            out[c] = np.nan
    ended = out["final_train_loss"]
    out["bad"] = ((out["status"] != "done") | ~np.isfinite(ended.astype(float))
                  | (ended > out["start_loss"]))
    return out.reset_index()


def fixed_label(per_run: pd.DataFrame, axes) -> pd.Series:
    """The condition of each run with the tuned axes left out: model plus the other settings
    that vary within it (`mlp`, `mlp batch_size=64`)."""
    derived = {"run_id", "status", "start_loss", "bad", "condition"}
    cols = [c for c in per_run.columns if c not in derived and not c.startswith("final_")]
    return conditions.label_settings(per_run[cols], exclude=axes)


def candidates(per_run: pd.DataFrame, axes=("lr",), select: str = "val_loss") -> pd.DataFrame:
    """Every value of the tuned axes per (condition, n_train, activation): its mean
    validation score over seeds, seeds, bad seeds, and whether it is the choice.

    Needs `per_run` from `final_metrics`. A value with any bad seed scores worst and is never
    chosen; ties go to the first value in sorted order.
    """
    axes = list(axes)
    _check(per_run, axes, select)
    p = per_run.assign(condition=fixed_label(per_run, axes))
    lower = SELECT[select]
    rows = []
    for key, g in p.groupby(["condition", "n_train", "activation", *axes], sort=True, dropna=False):
        vals = g[f"final_{select}"].astype(float)
        n_bad = int(g["bad"].sum())
        score = float(vals.mean()) if n_bad == 0 and np.isfinite(vals).all() else np.nan
        rows.append((*key, len(g), n_bad, score))
    out = pd.DataFrame(rows, columns=["condition", "n_train", "activation", *axes, "n_seeds",
                                      "n_bad", select])
    worst = np.inf if lower else -np.inf
    ranked = out[select].fillna(worst) * (1 if lower else -1)
    out["chosen"] = False
    for _, g in out.assign(_r=ranked).groupby(["condition", "n_train", "activation"], sort=False):
        if np.isfinite(g["_r"]).any():
            out.loc[g["_r"].idxmin(), "chosen"] = True
    return out


def tune(per_run: pd.DataFrame, axes=("lr",), select: str = "val_loss", *,
         confidence: float = 0.95) -> pd.DataFrame:
    """One row per (condition, n_train, activation): the chosen value of each tuned axis
    (`best_<axis>`), its validation score, the test loss and accuracy there with intervals
    over seeds, and the activation's rank by that test loss among its condition and n_train.

    Needs `per_run` from `final_metrics`. Where every value is bad the row says so
    (`note`) and has no choice.
    """
    axes = list(axes)
    cand = candidates(per_run, axes, select)
    p = per_run.assign(condition=fixed_label(per_run, axes))
    rows = []
    for (cond, n, act), g in cand.groupby(["condition", "n_train", "activation"], sort=True):
        row = dict(condition=cond, n_train=n, activation=act, n_values=len(g))
        pick = g[g["chosen"]]
        if pick.empty:
            rows.append({**row, "note": "every value diverged or ended above its start"})
            continue
        pick = pick.iloc[0]
        row.update({f"best_{a}": pick[a] for a in axes})
        row[select] = pick[select]
        at = p[(p["condition"] == cond) & (p["n_train"] == n) & (p["activation"] == act)]
        for a in axes:
            at = at[at[a].astype(str) == str(pick[a])]
        for metric, bounds in (("test_loss", (0, np.inf)), ("test_accuracy", (0, 1))):
            k, mean, _, low, high, _, _ = interval(at[f"final_{metric}"], confidence,
                                                    bounds=bounds)
            row.update({metric: mean, f"{metric}_low": low, f"{metric}_high": high})
        row["n_seeds"] = int(len(at))
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    for c in [*(f"best_{a}" for a in axes), select, "test_loss", "test_loss_low", "test_loss_high",
              "test_accuracy", "test_accuracy_low", "test_accuracy_high", "n_seeds"]:
        if c not in out:  # every value of every cell went bad: the rows say so, the columns stay
            out[c] = np.nan
    out["rank"] = out.groupby(["condition", "n_train"])["test_loss"].rank(method="min")
    return out


def at_reference(per_run: pd.DataFrame, reference=None, *, axes=("lr",)) -> pd.DataFrame:
    """The same table at one fixed setting (the notebook's lr 0.1 by default): per
    (condition, n_train, activation) the mean test loss and accuracy, and the rank."""
    reference = dict(reference or REFERENCE)
    p = per_run.assign(condition=fixed_label(per_run, axes))
    for a, v in reference.items():
        p = p[np.isclose(p[a].astype(float), float(v))] if _numeric(p[a]) else p[p[a] == v]
    g = p.groupby(["condition", "n_train", "activation"])
    out = g.agg(test_loss=("final_test_loss", "mean"), test_accuracy=("final_test_accuracy", "mean"),
                n_seeds=("seed", "nunique"), n_bad=("bad", "sum")).reset_index()
    out["rank"] = out.groupby(["condition", "n_train"])["test_loss"].rank(method="min")
    return out


def _numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s)


def ranking_shift(reference: pd.DataFrame, tuned: pd.DataFrame, *, places: int = 2) -> pd.DataFrame:
    """Per (condition, n_train): Kendall's tau between the reference and tuned rankings and
    the activations that move `places` or more (`name ref->tuned`)."""
    rows = []
    for (cond, n), t in tuned.groupby(["condition", "n_train"], sort=True):
        r = reference[(reference["condition"] == cond) & (reference["n_train"] == n)]
        both = t.set_index("activation")["rank"].to_frame("tuned").join(
            r.set_index("activation")["rank"].rename("reference"), how="inner").dropna()
        tau = p = np.nan
        if len(both) >= 2:
            tau, p = stats.kendalltau(both["reference"], both["tuned"])
        moved = [f"{a} {int(x.reference)}->{int(x.tuned)}" for a, x in both.iterrows()
                 if abs(x.reference - x.tuned) >= places]
        rows.append(dict(condition=cond, n_train=n, n_activations=len(both), kendall_tau=tau,
                         p=p, moved=", ".join(moved), n_moved=len(moved)))
    return pd.DataFrame(rows, columns=["condition", "n_train", "n_activations", "kendall_tau", "p",
                                       "moved", "n_moved"])


def stability(per_run: pd.DataFrame, tuned: pd.DataFrame, axes=("lr",), *,
              chance: float = 0.1) -> pd.DataFrame:
    """Eger et al.'s two views per (condition, n_train, activation): the best (tuned) test
    accuracy and the mean test accuracy over every value of the grid, a bad run counting as
    chance (`chance`): a high mean means the activation works without tuning."""
    p = per_run.assign(condition=fixed_label(per_run, axes))
    acc = p["final_test_accuracy"].where(~p["bad"], chance)
    mean = p.assign(acc=acc).groupby(["condition", "n_train", "activation"])["acc"].mean()
    out = tuned[["condition", "n_train", "activation", "test_accuracy"]].rename(
        columns={"test_accuracy": "best_accuracy"}).join(
        mean.rename("mean_accuracy"), on=["condition", "n_train", "activation"])
    out["mean_rank"] = out.groupby(["condition", "n_train"])["mean_accuracy"].rank(
        ascending=False, method="min")
    return out


def tuned_runs(per_run: pd.DataFrame, tuned: pd.DataFrame, axes=("lr",)) -> pd.Series:
    """run_id -> condition label for the runs at each activation's chosen values: the view
    in which claims are judged after tuning."""
    p = per_run.assign(condition=fixed_label(per_run, axes))
    keep = {}
    for t in tuned.dropna(subset=[f"best_{a}" for a in axes]).itertuples(index=False):
        t = t._asdict()
        m = (p["condition"] == t["condition"]) & (p["n_train"] == t["n_train"]) & (
            p["activation"] == t["activation"])
        for a in axes:
            m &= p[a].astype(str) == str(t[f"best_{a}"])
        for rid in p.loc[m, "run_id"]:
            keep[rid] = t["condition"]
    return pd.Series(keep, dtype=object)


def _check(per_run: pd.DataFrame, axes: list, select: str) -> None:
    if select not in SELECT:
        raise ValueError(f"unknown selection metric {select!r}; choose from {', '.join(SELECT)}")
    unknown = [a for a in axes if a not in TUNABLE]
    if unknown:
        raise ValueError(f"cannot tune {', '.join(unknown)}; tunable: {', '.join(TUNABLE)}")
    need(per_run, "per_run", ["run_id", "model", "activation", "seed", "n_train", "bad",
                               f"final_{select}", *axes])
    if per_run[f"final_{select}"].isna().all():
        raise ValueError("tuning needs a validation split: run the study with --validation V")
