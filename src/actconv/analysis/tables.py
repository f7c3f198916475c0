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
