"""actconv: how the activation function changes how a small network converges on few samples.

The package is layered; each layer imports only those below it (tests/test_layers.py):
`study` (what a study is) <- `train` (one run, or a stack) <- `run` (the queue, the backends,
the store) ; `analysis` (pure functions on the store's tables) <- `report` (the page, figures,
exports); `cli` on top. `actconv.plots` and `actconv.claims` re-export the figures and claims.
"""
import importlib

__version__ = "0.1.0"

# Where each public name lives; imported on first use, so that `import actconv` (and a
# driver that only plans and stores runs) does not import torch.
_EXPORTS = {
    "ActconvError": "errors", "ModelSpec": "study.config", "RunSpec": "study.config",
    "StudySpec": "study.config", "load_preset": "study.config", "load_study": "study.config",
    "with_overrides": "study.config", "run_study": "run.queue", "Results": "run.store",
    "RunResult": "train.result", "load_results": "run.store", "train_run": "train.loop",
    "Store": "run.store", "select": "run.store", "stored_results": "run.store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'actconv' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
