"""A user's activation in torch: importing `module:attr`, fingerprinting its source, building a
fresh module per layer, and the probes that check it once, in the driver, before any run."""
import contextlib
import copy
import hashlib
import importlib
import inspect
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .definition import Definition
from .expressions import compile_expression


class Function(nn.Module):
    """An elementwise function of a tensor (an expression or a user's plain function) as a module."""
    actconv_activation = True

    def __init__(self, fn, label: str):
        super().__init__()
        self.fn, self.label = fn, label

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.label


@contextlib.contextmanager
def _search_path(folders):
    """The folders first on sys.path while importing, as they were afterwards."""
    saved = list(sys.path)
    sys.path[:0] = [str(f) for f in folders if f]
    try:
        yield
    finally:
        sys.path[:] = saved


def _import(text: str, folders, fresh: bool):
    """The object `module:attr` names, imported with `folders` first on sys.path."""
    module_name, _, attr = text.partition(":")
    with _search_path(folders):
        try:
            importlib.invalidate_caches()
            if fresh and module_name in sys.modules:  # the driver sees the file as it is now
                module = importlib.reload(sys.modules[module_name])
            else:
                module = importlib.import_module(module_name)
        except Exception as e:  # noqa: BLE001 -- any error inside the user's module, in one line
            raise ConfigError(f"cannot import module {module_name!r} of {text!r}: "
                              f"{type(e).__name__}: {_first_line(e)}") from None
    if not hasattr(module, attr):
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r} ({text!r})")
    obj = getattr(module, attr)
    if not callable(obj):
        raise ConfigError(f"{text!r} is not callable: a {type(obj).__name__}; give an nn.Module class, "
                          f"a factory returning a module, or a function of a tensor")
    return module, obj


def _fingerprint(module, obj) -> str:
    """sha256 of the object's source, else of its module's file."""
    try:
        data = inspect.getsource(obj).encode()
    except (OSError, TypeError):
        file = getattr(module, "__file__", None)
        data = Path(file).read_bytes() if file else repr(obj).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _root(module) -> str:
    """The sys.path folder a module was found under."""
    file = getattr(module, "__file__", None)
    if not file:
        return ""
    root = Path(file).resolve().parent
    levels = module.__name__.count(".") + (Path(file).name == "__init__.py")
    for _ in range(levels):
        root = root.parent
    return str(root)


def shipped_path(d: Definition) -> str:
    """What a Ray worker needs of a definition: its top-level module's file or package folder."""
    top = d.text.partition(":")[0].split(".")[0]
    for candidate in (Path(d.path) / top, Path(d.path) / f"{top}.py"):
        if d.path and candidate.exists():
            return str(candidate)
    return ""


def _instantiate(obj, text: str) -> nn.Module:
    """A fresh module from a class, a module instance (copied), a factory or a function."""
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        return obj()
    if isinstance(obj, nn.Module):
        return copy.deepcopy(obj)
    try:
        sig = inspect.signature(obj)
        required = [p for p in sig.parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):  # a builtin without a signature: treat it as a function
        required = [None]
    if not required:  # a factory
        module = obj()
        if not isinstance(module, nn.Module):
            raise ConfigError(f"{text!r} takes no argument, so it is a factory, but it returned a "
                              f"{type(module).__name__}, not an nn.Module")
        return module
    return Function(obj, text)


def build(name: str, d: Definition, fresh: bool = False) -> nn.Module:
    """A fresh module for one layer; the object's source must still be what was planned."""
    if d.kind == "expr":
        module = Function(compile_expression(d.text), d.text)
    else:
        imported, obj = _import(d.text, [d.path, os.getcwd()], fresh)
        if d.fingerprint and _fingerprint(imported, obj) != d.fingerprint:
            raise ConfigError(f"activation {name!r}: the source of {d.text} changed since the study "
                              f"was planned; run the study again to plan new runs")
        module = _instantiate(obj, d.text)
    module.actconv_activation = True
    module.actconv_elementwise = d.elementwise
    return module


def inspect_definition(d: Definition, base, rng) -> Definition:
    """The definition fingerprinted, probed (shape, elementwise) and given its output range."""
    if d.kind == "object":
        imported, obj = _import(d.text, [base, os.getcwd()], fresh=True)
        d = replace(d, fingerprint=_fingerprint(imported, obj), path=_root(imported))
    module = build("?", d)
    gen = torch.Generator().manual_seed(0)
    for shape in [(6, 5), (2, 3, 4, 4)]:
        x = torch.randn(shape, generator=gen)
        try:
            with torch.no_grad():
                y = module(x)
        except Exception as e:  # noqa: BLE001 -- the user's code, reported in one line
            raise ConfigError(f"{d.text} fails on a tensor of shape {list(shape)}: "
                              f"{type(e).__name__}: {_first_line(e)}") from None
        if not isinstance(y, torch.Tensor):
            raise ConfigError(f"{d.text} returned a {type(y).__name__}, not a tensor")
        if y.shape != x.shape:
            raise ConfigError(f"{d.text} changes the shape: {list(x.shape)} -> {list(y.shape)}; an "
                              f"activation must keep it")
    estimated = rng is None
    if estimated:
        rng = _estimate_range(module)
    return replace(d, elementwise=is_elementwise(module), range=rng, range_estimated=estimated)


def _estimate_range(module: nn.Module):
    """(low, high) of the output over a wide grid, infinite on a side where it still grows at
    the end; None when unbounded both ways or the module does not run in float64."""
    grid = torch.logspace(-3, 6, 2000, dtype=torch.float64)
    x = torch.cat([-grid.flip(0), torch.zeros(1, dtype=torch.float64), grid])
    ends = torch.tensor([-1e5, -1e6, 1e5, 1e6], dtype=torch.float64)
    try:
        with torch.no_grad():
            probe = copy.deepcopy(module).double()
            y, e = probe(x), probe(ends).tolist()
    except Exception:  # noqa: BLE001 -- a module that works only in float32: no estimate
        return None
    y = y[torch.isfinite(y)]
    if len(y) < len(x) // 2:
        return None
    low, high = y.min().item(), y.max().item()
    tol = 1e-6 * max(high - low, 1e-12)

    def growing(near, far, bound, sign):
        return not math.isfinite(far) or (sign * (far - bound) >= -tol and abs(far - near) > tol)
    if growing(e[0], e[1], low, -1):
        low = -math.inf
    if growing(e[2], e[3], high, 1):
        high = math.inf
    return None if math.isinf(low) and math.isinf(high) else (low, high)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:300]


def is_elementwise(module) -> bool:
    """Whether a module is parameter-free and elementwise, on a probe: each output entry
    depends on its own input entry alone (rows apart, other entries changed, permuted)."""
    if any(True for _ in module.parameters()):
        return False  # the ensemble stacks only the built-in layers' parameters
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    close = lambda a, b: a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
    with torch.no_grad():
        y = module(x)
        rows = torch.cat([module(x[i:i + 1]) for i in range(len(x))])
        other = x.clone()
        other[:, 0] += 1.0
        perm = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(2))
        flat = module(x.flatten()[perm])
        return (close(y, rows) and close(module(other)[:, 1:], y[:, 1:])
                and close(flat, y.flatten()[perm]))
