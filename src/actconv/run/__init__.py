"""Running a study: the work queue with its claims, leases and retries (`queue`, whose
`run_study` is the entry point), a study's search with Optuna, trial batches through
`run_study`, then confirmation on fresh seeds (`search`), the backends of one shape (`serial`, `pool`, `ray_tasks`),
what running one unit needs wherever it runs (`execution`), what the pool's fork server
imports once (`worker`), re-execution against the store (`verify`) and the SQLite store
itself (`store`), which the driver alone writes, with the rows a report leaves in it and reads
a selection at a time (`rows`, handed out by `store.stored_results`).

May import `actconv.study`, `actconv.train` and `actconv.errors`. The analysis and the
report read the store's tables through `actconv.run.store` and nothing else of this layer.
"""
import importlib

_EXPORTS = {"run_study": "queue", "run_search": "search", "Store": "store", "load_results": "store", "verify_runs": "verify"}


def __getattr__(name: str):
    # Deferred, so that the analysis' `import actconv.run.store` loads no backend.
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
