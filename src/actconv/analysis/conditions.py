"""Conditions: every run setting but the seed. Runs of one condition are seeds of one question.

Analysis groups by (model, activation, n_train); `separate_conditions` relabels `model` so
that runs differing in any other setting (lr, batch size, engine, width, ...) never share a
group: a model whose runs of one activation and size vary in such settings is shown as
`mlp lr=0.3`, one label per combination, naming only the settings that vary. A setting that
differs between activations but never within one (a user's activation that the ensemble
cannot batch runs on the loop) cannot pool seeds, so it does not split the comparison.
"""
import dataclasses
import hashlib
import json

import pandas as pd

from . import tables

# The axes an analysis table already carries in its own columns, and the seed that a
# condition is replicated over: never part of a label.
OWN_COLUMNS = ("model", "activation", "seed", "n_train")
# Perturbed siblings (robustness replicas) repeat a seed's condition under a one-bit change:
# they are compared with their original, never counted as another condition.
SIBLING_FIELDS = ("perturb", "replica")
# Settings that name the same thing twice (the model table's name is in `model`), and what
# a run records rather than how it trains (a tuning run scores its test set only at the ends).
SKIP = ("model_spec", "evaluate")


def settings(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run, one column per setting, read from each run's stored config.

    Needs `runs`: run_id, config_json (the RunSpec's canonical JSON). The model table's
    fields are flattened beside the run's (`kind`, `hidden_units`, ...); values are kept
    as stored, lists and tables as their JSON text.
    """
    rows = []
    for rid, text in zip(runs["run_id"], runs["config_json"]):
        cfg = json.loads(text)
        flat = {k: v for k, v in cfg.items() if k not in SKIP}
        flat.update(cfg.get("model_spec") or {})
        rows.append({"run_id": rid, **{k: _scalar(v) for k, v in flat.items()}})
    return pd.DataFrame(rows).set_index("run_id") if rows else pd.DataFrame(index=pd.Index([], name="run_id"))


def _scalar(v):
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def varying(s: pd.DataFrame, exclude=()) -> dict[str, list[str]]:
    """{model: the settings that take more than one value among its runs of one activation
    and training-set size}; `s` is a `settings` table, `exclude` settings never to name."""
    skip = set(OWN_COLUMNS) | set(SIBLING_FIELDS) | set(exclude)
    out = {}
    for model, g in s.groupby("model", sort=True):
        cand = [c for c in g.columns if c not in skip]
        # Every column at once, as text (a list setting and a missing one compare as text).
        distinct = g[cand].astype(str).groupby([g["activation"], g["n_train"]]).nunique(dropna=False)
        out[model] = sorted(c for c in cand if (distinct[c] > 1).any())
    return out


def label_settings(s: pd.DataFrame, exclude=()) -> pd.Series:
    """Index of `s` -> condition label, from a `settings` table (see `labels`)."""
    vary = varying(s, exclude)
    return pd.Series({i: " ".join([str(row["model"]),
                                   *(f"{k}={_show(row[k])}" for k in vary.get(row["model"], []))])
                      for i, row in s.iterrows()}, name="model", dtype=object)


def labels(runs: pd.DataFrame, exclude=()) -> pd.Series:
    """run_id -> condition label: the model's name, then `key=value` for each setting that
    varies within that model (`mlp lr=0.3 batch_size=64`); the plain name where none does.
    `exclude`: settings left out (the tuned axes, when the label names a tuning group)."""
    if runs.empty:
        return pd.Series(dtype=object, name="model")
    return label_settings(settings(runs), exclude)


def _show(v) -> str:
    if isinstance(v, str) and len(v) > 24:  # a definition's JSON: its fingerprint will do
        return hashlib.sha256(v.encode()).hexdigest()[:8]
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def separate_conditions(results):
    """The same results with `model` relabelled by condition wherever settings vary within a
    model, in every table; the stored name stays in `runs.model_name`."""
    runs = results.runs
    if runs.empty or "config_json" not in runs:
        return results
    by_run = labels(runs)
    if (by_run == runs.set_index("run_id")["model"].reindex(by_run.index)).all():
        return results

    def relabel(table):
        return tables.relabel(table, by_run)

    new_runs = relabel(runs)
    if "model_name" not in new_runs:
        new_runs.insert(new_runs.columns.get_loc("model") + 1, "model_name", runs["model"])
    return dataclasses.replace(results, runs=new_runs, epochs=relabel(results.epochs),
                               batches=relabel(results.batches),
                               diagnostics=relabel(results.diagnostics))
