"""Robustness: does a finding survive a one-bit perturbation? A finding is a frequency.

Perturbed siblings (`perturb = ["init", "order"]`, `replicas = R`) repeat a run with one
change: `init` flips the lowest mantissa bit of one initial weight, `order` draws the batch
order from a new stream (Summers & Dinneen 2021: one flipped bit gives as much run-to-run
variety as a new seed). Here, pure functions on the results: the originals alone, the
replica sets (each sibling in place of its original), how often each verdict holds across
them, whether divergences and spikes recur in the siblings, and the variance a
perturbation alone produces next to the variance across seeds.
"""
import dataclasses

import numpy as np
import pandas as pd

from . import conditions, stats
from .stats import run_metrics
from .tables import has_rows, need, only

KINDS = ("init", "order")


def siblings(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run_id, perturb ('' for an original), replica, and `original`: the
    run_id of the unperturbed run with the same settings (NaN when it is not stored)."""
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "perturb", "replica", "original"])
    s = conditions.settings(runs)
    for col, default in (("perturb", ""), ("replica", 0)):
        s[col] = s[col].fillna(default) if col in s else default
    s["perturb"] = s["perturb"].replace({None: ""}).astype(str)
    keys = [c for c in s.columns if c not in ("perturb", "replica")]
    flat = s.reset_index()
    # Each run's settings but the perturbation, as one tuple of text (a row at a time with
    # iterrows took 5 s for 10,000 runs).
    settings_of = list(zip(*(flat[k].astype(str) for k in keys))) if keys else [()] * len(flat)
    lookup = {key: rid for key, rid, p in zip(settings_of, flat["run_id"], flat["perturb"]) if p == ""}
    original = [rid if p == "" else lookup.get(key, np.nan)
                for rid, p, key in zip(flat["run_id"], flat["perturb"], settings_of)]
    return pd.DataFrame({"run_id": flat["run_id"], "perturb": flat["perturb"],
                         "replica": flat["replica"].astype(int), "original": original})


def with_siblings(runs: pd.DataFrame, mapping: dict) -> dict:
    """`mapping` (run_id -> label) with every perturbed sibling of a mapped original under its
    original's label: the runs a view of chosen originals reads for robustness.

    Needs runs: run_id, config_json.
    """
    sib = siblings(runs)
    sib = sib[(sib["perturb"] != "") & sib["original"].isin(set(mapping))]
    return {**mapping, **{rid: mapping[orig] for rid, orig in zip(sib["run_id"], sib["original"])}}


def _keep(results, run_ids) -> object:
    ids = set(run_ids)
    return dataclasses.replace(results, **{name: only(getattr(results, name), ids)
                                           for name in ("runs", "epochs", "batches", "diagnostics")})


def originals(results):
    """The results without perturbed siblings: what every analysis but robustness reads."""
    sib = siblings(results.runs)
    if (sib["perturb"] == "").all():
        return results
    return _keep(results, sib.loc[sib["perturb"] == "", "run_id"])


def replica_sets(results) -> list[tuple[str, int, object]]:
    """(kind, replica, results) for every replica of every perturbation: the originals with
    each run that has that sibling replaced by it."""
    sib = siblings(results.runs)
    base = sib.loc[sib["perturb"] == "", "run_id"]
    out = []
    for (kind, rep), g in sib[sib["perturb"] != ""].dropna(subset=["original"]).groupby(
            ["perturb", "replica"], sort=True):
        swapped = set(g["original"])
        ids = [r for r in base if r not in swapped] + list(g["run_id"])
        view = _keep(results, ids)
        # A sibling answers for its original: same model label, same seed.
        out.append((kind, int(rep), view))
    return out


def verdict_robustness(results, evaluate) -> pd.DataFrame:
    """How often each verdict of the originals holds when siblings stand in for them.

    `evaluate(results) -> DataFrame` with columns id, scope, verdict (the claims registry's
    `evaluate`). Columns: id, scope, verdict, holds, sets, share, kinds (per kind k/n).
    """
    def table(frame):
        return {(r.id, r.scope): r.verdict for r in frame.itertuples(index=False)}

    base = table(evaluate(originals(results)))
    by_kind = {}
    for kind, rep, view in replica_sets(results):
        by_kind.setdefault(kind, {})[f"{kind} {rep}"] = table(evaluate(view))
    every = {"original": base, **{k: v for sets in by_kind.values() for k, v in sets.items()}}
    out = shares(every)
    per_kind = {kind: shares({"original": base, **sets}).set_index(["id", "scope"])
                for kind, sets in by_kind.items()}
    out["kinds"] = ["; ".join(f"{kind} {int(t.loc[(i, s), 'holds'])}/{int(t.loc[(i, s), 'sets'])}"
                              for kind, t in per_kind.items())
                    for i, s in zip(out["id"], out["scope"])]
    return out


def event_recurrence(results, *, spike_k: float = 10.0, spike_window: int = 50) -> pd.DataFrame:
    """For every divergence and spike of an original run with siblings: in how many of the
    original and its siblings it happens (a spike counts within `spike_window` steps).

    Needs runs (run_id, status, config_json, model, activation, seed, n_train) and batches.
    Columns: run_id, model, activation, seed, n_train, event, step, kind, recurs, of, label.
    """
    need(results.runs, "runs", ["run_id", "status", "config_json"])
    sib = siblings(results.runs)
    fam = sib.dropna(subset=["original"])
    fam = fam[fam["perturb"] != ""]
    if fam.empty:
        return pd.DataFrame(columns=["run_id", "model", "activation", "seed", "n_train", "event",
                                     "step", "kind", "recurs", "of", "label"])
    status = results.runs.set_index("run_id")["status"]
    keys = results.runs.set_index("run_id")[["model", "activation", "seed", "n_train"]]
    ids = set(fam["run_id"]) | set(fam["original"])
    b = only(results.batches, ids)
    spikes = stats.spikes(b, k=spike_k, window=spike_window) if has_rows(b) else pd.DataFrame(
        columns=["run_id", "step"])
    spike_steps = spikes.groupby("run_id")["step"].apply(list).to_dict()
    rows = []
    for orig, g in fam.groupby("original"):
        for kind, gk in g.groupby("perturb"):
            family = [orig, *gk["run_id"]]
            base = dict(run_id=orig, **keys.loc[orig].to_dict(), kind=kind, of=len(family))
            if status.get(orig) == "diverged":
                k = sum(status.get(r) == "diverged" for r in family)
                rows.append(dict(base, event="divergence", step=np.nan, recurs=k))
            for step in spike_steps.get(orig, []):
                k = sum(any(abs(s - step) <= spike_window for s in spike_steps.get(r, []))
                        for r in family)
                rows.append(dict(base, event="spike", step=step, recurs=k))
    out = pd.DataFrame(rows, columns=["run_id", "model", "activation", "seed", "n_train", "event",
                                      "step", "kind", "recurs", "of"])
    out["label"] = [_label(k, n) for k, n in zip(out["recurs"], out["of"])]
    return out


def _label(k: int, n: int) -> str:
    if k == n:
        return f"recurs in {k}/{n}: systematic"
    if k == 1:
        return f"1 of {n}: chaotic at this setting"
    return f"recurs in {k}/{n}"


def perturbation_variance(results, metric: str = "final_test_loss") -> pd.DataFrame:
    """Per (model, activation, n_train, kind): the variance of `metric` among one seed's
    original and siblings (averaged over seeds) beside the variance across the originals'
    seeds, and their ratio (about 1 when one bit does as much as a new seed)."""
    sib = siblings(results.runs)
    done = results.runs[results.runs["status"] == "done"]["run_id"]
    e = results.epochs[results.epochs["run_id"].isin(done)]
    if e.empty:
        return pd.DataFrame(columns=["model", "activation", "n_train", "kind", "within_var",
                                     "seeds_with_siblings", "across_seed_var", "n_seeds", "ratio"])
    pr = run_metrics(e).merge(sib, on="run_id")
    orig = pr[pr["perturb"] == ""]
    rows = []
    for kind, g in pr[pr["perturb"] != ""].groupby("perturb"):
        fam = pd.concat([g, orig[orig["run_id"].isin(g["original"])]])
        fam = fam.assign(family=fam["original"].where(fam["perturb"] != "", fam["run_id"]))
        for (model, act, n), h in fam.groupby(["model", "activation", "n_train"]):
            within = h.groupby("family")[metric].var(ddof=1).dropna()
            seeds = orig[(orig["model"] == model) & (orig["activation"] == act)
                         & (orig["n_train"] == n)][metric]
            across = float(seeds.var(ddof=1)) if len(seeds) >= 2 else np.nan
            w = float(within.mean()) if len(within) else np.nan
            rows.append(dict(model=model, activation=act, n_train=n, kind=kind, within_var=w,
                             seeds_with_siblings=len(within), across_seed_var=across,
                             n_seeds=len(seeds),
                             ratio=w / across if across and np.isfinite(across) else np.nan))
    return pd.DataFrame(rows, columns=["model", "activation", "n_train", "kind", "within_var",
                                       "seeds_with_siblings", "across_seed_var", "n_seeds", "ratio"])


def shares(verdict_sets: dict) -> pd.DataFrame:
    """Hand-checkable core of `verdict_robustness`: {set name: {(id, scope): verdict}} with a
    set named 'original' -> share of the other sets that agree with it, per (id, scope)."""
    base = verdict_sets["original"]
    others = [v for k, v in verdict_sets.items() if k != "original"]
    rows = [(i, s, v, sum(o.get((i, s)) == v for o in others), len(others))
            for (i, s), v in base.items()]
    out = pd.DataFrame(rows, columns=["id", "scope", "verdict", "holds", "sets"])
    out["share"] = out["holds"] / out["sets"].where(out["sets"] > 0)
    return out
