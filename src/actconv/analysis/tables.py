"""Helpers every long-table module shares: the key columns, column checks, number text, flags.

Pandas only (never torch): analysis, diagnostics analysis, claims and the report import it.
"""
import math

import pandas as pd

# The columns that name a run, and those that name a configuration (a run but its seed).
RUN_KEYS = ["run_id", "model", "activation", "seed", "n_train"]
CONFIG_KEYS = ["model", "activation", "n_train"]


def need(df: pd.DataFrame, name: str, columns) -> None:
    """Raise ValueError naming the columns `df` lacks and the ones it has."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}; it has: "
                         f"{', '.join(map(str, df.columns))}")


def fmt(x) -> str:
    """A number for evidence text: 3 significant digits, scientific when huge or tiny; 'n/a'
    for None, NaN, pd.NA or anything that is not a number."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(x):
        return "n/a"
    if not math.isfinite(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.2e}"
    return f"{x:#.3g}".rstrip(".")


def flag(table: pd.DataFrame, column: str) -> pd.Series:
    """A 0/1 run setting (activate_logits, batchnorm) as a bool Series; missing counts as off
    (stores written before the column existed)."""
    if column not in table.columns:
        return pd.Series(False, index=table.index)
    return table[column].fillna(0).astype(int) == 1


# -- batches and diagnostics: a DataFrame, or rows left in the store (`run.rows.StoredRows`) ----

def only(table, ids):
    """The rows of these runs: a filtered DataFrame, or a narrower selection of stored rows."""
    if isinstance(table, pd.DataFrame):
        return table[table["run_id"].isin(ids)]
    return table.only(ids)


def relabel(table, mapping) -> object:
    """`model` read as mapping[run_id] (for the runs it names; a Series or dict)."""
    if isinstance(table, pd.DataFrame):
        if table.empty or "model" not in table or "run_id" not in table:
            return table
        return table.assign(model=table["run_id"].map(mapping).fillna(table["model"]))
    return table.relabel(dict(mapping))


def has_rows(table) -> bool:
    return len(table) > 0 if isinstance(table, pd.DataFrame) else not table.empty


def rows(table, metrics=None) -> pd.DataFrame:
    """The rows as a DataFrame (diagnostics: only the `metrics` named, when given)."""
    if isinstance(table, pd.DataFrame):
        return table if metrics is None else table[table["metric"].isin(list(metrics))]
    return table.frame(metrics=metrics)


def per_run(table, key: str, fn, columns=None) -> pd.DataFrame:
    """`fn(rows)` where fn's result depends on each run's rows alone (one part per run, a
    run_id column, in run order): on stored rows computed a chunk of runs at a time, once
    per `key` (which names fn and its parameters), and read for the runs selected; fn
    reads the run keys and `columns` (default: every column)."""
    if isinstance(table, pd.DataFrame):
        return fn(table)
    return table.per_run(key, fn, columns)


def prefetch(table, fns: dict, columns=None) -> None:
    """`per_run` of several {key: fn} in one pass over stored rows (a DataFrame needs none)."""
    if not isinstance(table, pd.DataFrame):
        table.prefetch(fns, columns)


def run_keys(table, runs: pd.DataFrame) -> pd.DataFrame:
    """RUN_KEYS of the runs that have rows in `table`, in run order (stored rows: from `runs`,
    under the labels the selection shows)."""
    if isinstance(table, pd.DataFrame) and all(c in table for c in RUN_KEYS):
        return table.drop_duplicates("run_id")[RUN_KEYS].sort_values("run_id").reset_index(drop=True)
    if isinstance(table, pd.DataFrame):  # diagnostics name the run only
        keys = runs[runs["run_id"].isin(table["run_id"].unique())][RUN_KEYS].drop_duplicates("run_id")
        return keys.sort_values("run_id").reset_index(drop=True)
    ids = table.run_ids()
    keys = runs[runs["run_id"].isin(ids)][RUN_KEYS].drop_duplicates("run_id")
    if table.labels:
        keys = keys.assign(model=keys["run_id"].map(table.labels).fillna(keys["model"]))
    return keys.sort_values("run_id").reset_index(drop=True)
