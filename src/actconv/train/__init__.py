"""Training one run, or a stack of runs at once: the loop on one screen (`loop`), the
ensemble engine that trains seeds and elementwise-equal settings as one stacked network
(`ensemble`), what training records inside the network (`recorder`, torch only), the
process's seeding and thread count (`seeding`), one-bit perturbations (`perturb`) and the
plain result record (`result`).

May import `actconv.study` and `actconv.errors`, never pandas or scipy: a training process
loads torch and numpy only (tests/test_layers.py checks both).
"""
import importlib

_EXPORTS = {"train_run": "loop", "train_ensemble": "ensemble", "RunResult": "result"}


def __getattr__(name: str):
    # Deferred, so that importing `actconv.train.result` (the store does) never loads torch.
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
