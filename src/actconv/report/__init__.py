"""What a reader sees: the page (`page`, whose `write_report` writes `report/` beside the
store), every table it shows computed once from the analysis (`contents`), its sections
(`sections`) and HTML pieces (`markup`), which figures it shows (`figure_jobs`), the figures
themselves by topic (`figures/`: they return figures, only the page writes files), their
drawing in worker processes (`render`), the interactive curves the page draws with Plotly
(`interactive`), the Answers (`answers`), what it reads of the store (`loading`) and the
exports to CSV, Parquet, TensorBoard and MLflow (`exports`).

May import `actconv.analysis`, `actconv.study` for names, `actconv.run.store` for the
store's tables, and `actconv.errors`.
"""
import importlib

_EXPORTS = {"write_report": "page", "export": "exports"}


def __getattr__(name: str):
    # Deferred: `actconv export` needs no matplotlib.
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
