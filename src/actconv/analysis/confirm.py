"""The search's two stages as one table: each cell's choice on the tuning seeds' validation
scores, its test numbers on the confirm seeds alone, whether the choice sits at the edge of
what was searched, and the winner's curse.

The winner's curse is the confirm seeds' mean test loss at the chosen setting minus the
tuning seeds' there: the tuning seeds chose the setting, so their numbers flatter it.
"""
import math

import numpy as np
import pandas as pd

from ..study.search import Range, SearchSpec
from . import tuning
from .stats import interval

# A continuous range's choice within 5% of its span (in log space for a log range) of a bound
# is at the edge: the optimum may lie outside, and the sampler rarely lands exactly on a bound.
# A list's (or a grid's) choice is at the edge when it is its lowest or highest value, and so
# is an int range's of fewer than 20 steps (where 5% of the span is less than one step).
EDGE_SHARE = 0.05


def edge(value: float, r: Range, share: float = EDGE_SHARE) -> str:
    """'low', 'high' or '' for one chosen value of one searched range."""
    low, high = r.bounds
    if r.kind == "list" or r.kind == "int" and high - low < 1 / share:
        return "low" if math.isclose(value, low) else "high" if math.isclose(value, high) else ""
    f = math.log if r.kind == "log" else float
    span = f(high) - f(low)
    if f(value) - f(low) <= share * span:
        return "low"
    return "high" if f(high) - f(value) <= share * span else ""


def edge_text(row, space) -> str:
    """`lr=1 highest of log(0.01, 1)` for every axis of one chosen row at its edge, `; `-joined."""
    out = []
    for axis, r in space:
        v = row.get(f"best_{axis}")
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        side = edge(float(v), r)
        if side:
            out.append(f"{axis}={float(v):.3g} {'lowest' if side == 'low' else 'highest'} of {r.text()}")
    return "; ".join(out)


def grid_space(candidates: pd.DataFrame, axes) -> dict:
    """(condition, n_train, activation) -> [(axis, list Range)] of the numeric values a grid tried."""
    out = {}
    for key, g in candidates.groupby(["condition", "n_train", "activation"], sort=False):
        out[key] = [(a, Range("list", values=tuple(sorted(float(v) for v in g[a].unique()))))
                    for a in axes if pd.api.types.is_numeric_dtype(g[a])]
    return out


def mark_edges(tuned: pd.DataFrame, spaces) -> pd.DataFrame:
    """`tuned` with `at_edge` (bool) and `edge` (which axes, which side); `spaces` is one space
    for every row or a grid_space mapping."""
    tuned = tuned.copy()
    texts = []
    for row in tuned.to_dict("records"):
        space = spaces.get((row["condition"], row["n_train"], row["activation"]), []) \
            if isinstance(spaces, dict) else spaces
        texts.append(edge_text(row, space))
    tuned["edge"] = texts
    tuned["at_edge"] = tuned["edge"] != ""
    return tuned


def confirmed(per_run: pd.DataFrame, search: SearchSpec, select: str = "val_loss", *,
              confidence: float = 0.95) -> pd.DataFrame:
    """One row per (condition, n_train, activation): the setting chosen on the tuning seeds
    (`best_<axis>`, its validation score, `n_values` settings tried), the test loss and
    accuracy with intervals over the confirm seeds only (`n_confirm_seeds`), the tuning
    seeds' test loss there (`tune_test_loss`), `winners_curse`, `at_edge`, `edge` and the
    rank by the confirm seeds' test loss.

    Needs `per_run` from `tuning.final_metrics`. The confirm seeds' validation scores are
    never read, and no test column is read before the choice.
    """
    axes = list(search.axes)
    tune_runs = per_run[per_run["seed"].isin(search.tune_seeds)]
    chosen = tuning.tune(tune_runs, axes, select, confidence=confidence)
    if chosen.empty:
        return chosen
    chosen = chosen.rename(columns={"test_loss": "tune_test_loss", "n_seeds": "n_tune_seeds"}).drop(
        columns=[c for c in chosen if c.startswith(("test_loss_", "test_accuracy")) or c == "rank"])
    at = confirm_runs(per_run, chosen, search)
    rows = []
    for row in chosen.to_dict("records"):
        runs = at[(at["condition"] == row["condition"]) & (at["n_train"] == row["n_train"])
                  & (at["activation"] == row["activation"])]
        for metric, bounds in (("test_loss", (0, np.inf)), ("test_accuracy", (0, 1))):
            k, mean, _, low, high, _, _ = interval(runs[f"final_{metric}"], confidence, bounds=bounds)
            row.update({metric: mean, f"{metric}_low": low, f"{metric}_high": high})
        row["n_confirm_seeds"] = int(runs["seed"].nunique())
        row["n_seeds"] = row["n_confirm_seeds"]
        row["winners_curse"] = row["test_loss"] - row["tune_test_loss"]
        rows.append(row)
    out = mark_edges(pd.DataFrame(rows), list(search.space))
    out["rank"] = out.groupby(["condition", "n_train"])["test_loss"].rank(method="min")
    return out


def confirm_runs(per_run: pd.DataFrame, chosen: pd.DataFrame, search: SearchSpec) -> pd.DataFrame:
    """The confirm seeds' runs at each cell's chosen setting, with their `condition` label:
    the view every test number after a search reads."""
    axes = list(search.axes)
    # Every seed but the tuning seeds: a grid may confirm on its own seeds (seed-fair's TinyVGG
    # on 10, the MLPs on 30), and every confirm seed is checked disjoint from the tuning seeds.
    p = per_run[~per_run["seed"].isin(search.tune_seeds)]
    p = p.assign(condition=tuning.fixed_label(per_run, axes).loc[p.index])
    keep = np.zeros(len(p), dtype=bool)
    for row in chosen.dropna(subset=[f"best_{a}" for a in axes]).to_dict("records"):
        m = ((p["condition"] == row["condition"]) & (p["n_train"] == row["n_train"])
             & (p["activation"] == row["activation"])).to_numpy()
        for a in axes:  # the very floats the search trained (the store keeps them exactly)
            m = m & np.isclose(p[a].astype(float).to_numpy(), float(row[f"best_{a}"]), rtol=1e-12, atol=0)
        keep |= m
    return p[keep]
