"""A user's Python object named `module:attr`: imported from the study file's folder, the
working directory or PYTHONPATH, and fingerprinted by its source for the run id.

The module is imported (the user named their own code), never evaluated from text.
"""
import functools
import hashlib
import importlib
import inspect
import os
import re
import sys
from pathlib import Path

from ..errors import ConfigError

REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_ref(text) -> bool:
    """Whether text names a Python object as `module:attr` (dotted parts allowed)."""
    return isinstance(text, str) and bool(REF.match(text))


def add_search_path(folder) -> None:
    """Put a folder first on sys.path and on PYTHONPATH, so that workers started later import
    from it as well (a pool's server inherits sys.path, Ray's workers the environment)."""
    folder = str(Path(folder).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if folder not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([folder, *parts])


def resolve(ref: str, what: str = "object", folder=None):
    """The object `module:attr` names; a ConfigError in one line when it cannot be had."""
    if not is_ref(ref):
        raise ConfigError(f"{what} {ref!r} is not of the form module:attr")
    if folder is not None:
        add_search_path(folder)
    add_search_path(os.getcwd())  # a console script does not have the working directory on sys.path
    return _resolve(ref, what)


@functools.lru_cache(maxsize=None)
def _resolve(ref: str, what: str):
    module_name, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 -- any failure of the user's module is their input's error
        raise ConfigError(f"{what} {ref!r}: cannot import module {module_name!r} "
                          f"({type(e).__name__}: {e}); it is looked for in the study file's folder, "
                          f"the working directory and PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {ref!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{what} {ref!r} is a {type(obj).__name__}, not callable")
    return obj


def fingerprint(obj) -> str:
    """Short hash of the object's source (of its module's file where the source is not to be
    had): editing the code gives new run ids."""
    try:
        text = inspect.getsource(obj).encode()
    except (OSError, TypeError):
        try:
            text = Path(inspect.getfile(sys.modules[obj.__module__])).read_bytes()
        except (OSError, TypeError, KeyError, AttributeError):
            text = repr(obj).encode()
    return hashlib.sha256(text).hexdigest()[:16]
