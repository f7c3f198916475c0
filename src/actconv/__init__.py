"""actconv: how the activation function changes how a small network converges on few samples."""
import importlib

__version__ = "0.1.0"

# Where each public name lives; imported on first use, so that `import actconv` (and a
# driver that only plans and stores runs) does not import torch.
_EXPORTS = {
    "ActconvError": "errors", "ModelSpec": "config", "RunSpec": "config", "StudySpec": "config",
    "load_preset": "config", "load_study": "config", "with_overrides": "config",
    "run_study": "executors", "Results": "store", "RunResult": "store", "load_results": "store",
    "train_run": "train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'actconv' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
