"""Activation registry: name -> a fresh module per call, its family and recommended init.

Besides the built-in names, three kinds of activation from the user (see README):
- a parametric built-in, `elu(alpha=0.5)`: self-describing, stored under a canonical spelling;
- an expression, `ptanh=where(x > 0, tanh(x), 0.25 * tanh(x))` (expressions.py);
- a Python object, `module:attr`: an nn.Module subclass, a factory or an elementwise function.
The last two are a `Definition`, carried in each RunSpec (`activation_def`) so that any worker
rebuilds them, and fingerprinted into the run id.
"""
import ast
import hashlib
import json
import math
import re

from ..errors import ConfigError
from .definition import Definition

# Initialisation schemes a model or an activation may name ("auto": the activation's own).
INITS = ["default", "auto", "lecun_normal", "kaiming_normal", "xavier_uniform", "uniform_fan_in"]


def _nn(cls: str, *args):
    """A factory for torch.nn.<cls>(*args), importing torch only when a model is built: a
    driver that only plans and stores runs never holds torch (~300 MB a process)."""
    def make():
        from torch import nn
        return getattr(nn, cls)(*args)
    make.__qualname__ = f"nn.{cls}"
    make.cls = cls
    return make


# Factories, not instances: every layer of every run gets its own module, so a PReLU's
# learned slope can never leak between layers or runs (the original shared one instance).
ACTIVATIONS = {
    "relu": _nn("ReLU"),
    "relu6": _nn("ReLU6"),
    "leaky_relu": _nn("LeakyReLU", 0.01),
    "leaky_relu_0.1": _nn("LeakyReLU", 0.1),
    "prelu": _nn("PReLU"),
    "elu": _nn("ELU"),
    "celu": _nn("CELU"),
    "selu": _nn("SELU"),
    "gelu": _nn("GELU"),
    "silu": _nn("SiLU"),
    "mish": _nn("Mish"),
    "hardswish": _nn("Hardswish"),
    "softplus": _nn("Softplus"),
    "softshrink": _nn("Softshrink"),
    "tanhshrink": _nn("Tanhshrink"),
    "sigmoid": _nn("Sigmoid"),
    "hardsigmoid": _nn("Hardsigmoid"),
    "softsign": _nn("Softsign"),
    "tanh": _nn("Tanh"),
    "hardtanh": _nn("Hardtanh"),
    "logsigmoid": _nn("LogSigmoid"),
}

# The original study's four families, in its order.
FAMILIES = {
    "modern_family": ["mish", "silu", "hardswish", "gelu", "softplus", "softshrink",
                      "tanhshrink", "prelu", "elu", "celu"],
    "sigmoid_tanh_family": ["sigmoid", "hardsigmoid", "softsign", "tanh", "hardtanh",
                            "logsigmoid", "tanhshrink", "hardswish"],
    "relu_family": ["relu", "relu6", "leaky_relu", "leaky_relu_0.1", "prelu", "elu", "celu",
                    "selu", "gelu", "silu"],
    "common_activations": ["relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "silu",
                           "mish", "tanh", "sigmoid"],
}

# What init = "auto" uses: LeCun normal for SELU (self-normalising needs Var(w) = 1/n),
# He for the rectifier family, Xavier for the squashing ones; PyTorch's default otherwise.
RECOMMENDED_INIT = {
    "selu": "lecun_normal",
    **{a: "kaiming_normal" for a in ["relu", "relu6", "leaky_relu", "leaky_relu_0.1", "prelu",
                                     "elu", "celu", "gelu", "silu", "mish", "hardswish"]},
    **{a: "xavier_uniform" for a in ["sigmoid", "hardsigmoid", "softsign", "tanh", "hardtanh",
                                     "logsigmoid", "tanhshrink", "softplus", "softshrink"]},
}

# Range of the activation's output, for the loss floor an activated logit layer imposes.
BOUNDED_RANGE = {
    "sigmoid": (0.0, 1.0), "hardsigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0), "hardtanh": (-1.0, 1.0),
    "relu6": (0.0, 6.0), "logsigmoid": (float("-inf"), 0.0),
}


def logit_loss_floor(low: float, high: float, n_classes: int = 10) -> float:
    """Least cross-entropy reachable when every logit lies in (low, high)."""
    return math.log1p((n_classes - 1) * math.exp(low - high))


def make_activation(name: str) -> "torch.nn.Module":
    """A fresh activation module for one layer."""
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]()
    if name in _DEFINED:
        from .user_activations import build
        return build(name, _DEFINED[name])
    if "(" in name:
        base, kwargs = _parametric(name)
        from torch import nn
        return getattr(nn, ACTIVATIONS[base].cls)(**kwargs)
    raise ConfigError(unknown("activation", name, list(ACTIVATIONS) + list(FAMILIES)))


def expand(names, defined: dict | None = None, base=None) -> list[str]:
    """Expand family names into activations, keeping order and dropping repeats.

    Entries may also be a parametric spelling (`elu(0.5)`, stored canonically), a name from
    `defined` (name -> Definition), or a new definition, `NAME=EXPRESSION`, `module:attr` or
    `NAME=module:attr`, which is added to `defined`; `base` is the folder a module may sit in.
    """
    out, defined = [], {} if defined is None else defined
    for entry in names:
        if entry in FAMILIES:
            members = FAMILIES[entry]
        elif entry in ACTIVATIONS or entry in defined:
            members = [entry]
        elif NAME.fullmatch(entry.partition("=")[0].strip()) and "=" in entry or OBJECT.fullmatch(entry.strip()):
            name, definition = parse_entry(entry, base)
            if name in defined and defined[name].identity() != definition.identity():
                raise ConfigError(f"activation {name!r} is defined twice, differently")
            defined[name] = definition
            members = [name]
        elif "(" in entry:
            members = [canonical(entry)]
        else:
            raise ConfigError(unknown("activation", entry, list(ACTIVATIONS) + list(FAMILIES) + list(defined)))
        for a in members:
            if a not in out:
                out.append(a)
    return out


def family_of(name: str) -> list[str]:
    """The families an activation belongs to."""
    found = [f for f, members in FAMILIES.items() if name in members]
    if name in _DEFINED and _DEFINED[name].family:
        found.append(_DEFINED[name].family)
    return found


def recommended_init(name: str) -> str:
    """What init = "auto" uses: the registry's, a parametric one's base name's, a definition's."""
    if name in _DEFINED:
        return _DEFINED[name].init or "default"
    return RECOMMENDED_INIT.get(name.split("(")[0], "default")


# -- parametric built-ins ----------------------------------------------------------------

MAX_PARAMETER = 1e6  # |a parameter|: torch takes absurd values and then overflows
_NOT_PARAMETERS = {"self", "inplace", "device", "dtype"}


def _parameters(base: str) -> dict:
    """name -> default of the torch class's numeric constructor parameters (inspect.signature)."""
    import inspect

    from torch import nn
    sig = inspect.signature(getattr(nn, ACTIVATIONS[base].cls).__init__)
    return {p.name: p.default for p in sig.parameters.values()
            if p.name not in _NOT_PARAMETERS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and isinstance(p.default, (int, float)) and not isinstance(p.default, bool)}


def _parametric(text: str) -> tuple[str, dict]:
    """(base name, {parameter: value}) of `name(args)`; ConfigError listing what is accepted."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        call = None
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ConfigError(f"activation {text!r} is neither a name nor a spelling like elu(alpha=0.5)")
    base = call.func.id
    bases = [a for a in ACTIVATIONS if a.isidentifier() and _parameters(a)]
    if base not in ACTIVATIONS or base not in bases:
        raise ConfigError(unknown("parametric activation", base, bases))
    params = _parameters(base)
    accepted = ", ".join(f"{k}={v}" for k, v in params.items())
    if len(call.args) > len(params) or any(k.arg is None for k in call.keywords):
        raise ConfigError(f"activation {text!r}: {base} takes at most {len(params)} parameters: {accepted}")
    values = dict(zip(params, call.args))
    for k in call.keywords:
        if k.arg not in params or k.arg in values:
            raise ConfigError(f"activation {text!r}: {'repeated' if k.arg in values else 'unknown'} "
                              f"parameter {k.arg!r}; {base} accepts {accepted}")
        values[k.arg] = k.value
    out = {}
    for key, node in values.items():
        from .expressions import _literal
        v = _literal(node)
        default = params[key]
        if v is None or not abs(v) <= MAX_PARAMETER:
            raise ConfigError(f"activation {text!r}: {key} must be a number literal up to "
                              f"{MAX_PARAMETER:g} in size; {base} accepts {accepted}")
        if isinstance(default, int) and not isinstance(default, bool) and v != int(v):
            raise ConfigError(f"activation {text!r}: {key} must be a whole number; {base} accepts {accepted}")
        out[key] = int(v) if isinstance(default, int) and not isinstance(default, bool) else float(v)
    try:  # what the constructor itself refuses (hardtanh(2, -2), prelu(0))
        getattr(__import__("torch").nn, ACTIVATIONS[base].cls)(**out)
    except (ValueError, TypeError, RuntimeError, AssertionError) as e:
        raise ConfigError(f"activation {text!r}: torch refuses it: {str(e).splitlines()[0] if str(e) else e!r}") from None
    return base, out


def canonical(text: str) -> str:
    """The stored spelling of a parametric built-in: every parameter, named, defaults filled
    in, in the constructor's order (`elu(0.5)` and `elu( alpha = 0.50 )` are both `elu(alpha=0.5)`)."""
    base, values = _parametric(text)
    values = {**_parameters(base), **values}  # defaults spelled out: one spelling per function
    return f"{base}(" + ", ".join(f"{k}={float(v) if isinstance(v, float) else v!r}" for k, v in values.items()) + ")"


# -- definitions from the user -------------------------------------------------------------

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
OBJECT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
DEFINITION_KEYS = {"expr", "object", "init", "family", "range"}


# Definitions this process knows: filled by parse_entry / define, and by `use` in workers.
_DEFINED: dict[str, Definition] = {}


def parse_entry(entry: str, base=None) -> tuple[str, Definition]:
    """(name, Definition) of `NAME=EXPRESSION`, `module:attr` or `NAME=module:attr`."""
    name, eq, body = entry.partition("=")
    name, body = name.strip(), body.strip()
    if not eq:  # module:attr, named after attr
        name, body = entry.strip().rpartition(":")[2], entry.strip()
    return define(name, {"object": body} if OBJECT.fullmatch(body) else {"expr": body}, base)


def define(name: str, table: dict, base=None, where: str = "") -> tuple[str, Definition]:
    """Check one activation definition (a study's `[activations.NAME]` table) and register it.

    The object is imported (from `base`, the working directory or PYTHONPATH), built and
    probed once here, in the driver: an activation that does not build, changes the shape
    or is not a function of a tensor is refused before anything is stored.
    """
    where = where or f"activation {name!r}"
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in ACTIVATIONS or name in FAMILIES:
        raise ConfigError(f"{where}: a new activation needs a name of letters, digits, '_', '.' or '-' "
                          f"that is no built-in one, got {name!r}")
    bad = sorted(set(table) - DEFINITION_KEYS)
    if bad:
        raise ConfigError(f"{where}: unknown key {bad[0]!r}; allowed: {', '.join(sorted(DEFINITION_KEYS))}")
    if ("expr" in table) == ("object" in table):
        raise ConfigError(f"{where}: give exactly one of expr = \"...\" or object = \"module:attr\"")
    for key in ("expr", "object", "init", "family"):
        if key in table and not isinstance(table[key], str):
            raise ConfigError(f"{where}: {key} must be a string")
    init = table.get("init", "")
    if init and init not in INITS:
        raise ConfigError(f"{where}: " + unknown("init", init, INITS))
    rng = table.get("range")
    if rng is not None:
        if (not isinstance(rng, list) or len(rng) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)
                or not rng[0] < rng[1]):
            raise ConfigError(f"{where}: range must be [low, high] with low < high, got {rng!r}")
        rng = (float(rng[0]), float(rng[1]))
    if "expr" in table:
        from .expressions import canonical as canonical_expr
        try:
            text = canonical_expr(table["expr"])
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        d = Definition("expr", text, hashlib.sha256(text.encode()).hexdigest()[:16], init, table.get("family", ""))
    else:
        if not OBJECT.fullmatch(table["object"]):
            raise ConfigError(f"{where}: object must be module:attr (e.g. mymodule:penalized_tanh), "
                              f"got {table['object']!r}")
        d = Definition("object", table["object"], "", init, table.get("family", ""))
    from .user_activations import inspect_definition
    try:
        d = inspect_definition(d, base, rng)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    _DEFINED[name] = d
    return name, d


def use(name: str, definition: str) -> None:
    """Make a run's activation known in this process (a worker): its Definition as JSON."""
    if definition and (name not in _DEFINED or _DEFINED[name].to_json() != definition):
        _DEFINED[name] = Definition.from_json(definition)


def use_stored_activations(runs) -> set[str]:
    """The stored runs' activations that are no built-in name, each made known in this
    process (a report draws them); those that cannot be rebuilt here are left out."""
    out = set()
    for name, config in runs[["activation", "config_json"]].drop_duplicates("activation").itertuples(index=False):
        if name in ACTIVATIONS:
            continue
        try:
            use(name, json.loads(config).get("activation_def", ""))
            make_activation(name)
        except Exception:  # noqa: BLE001 -- a module gone since, a changed source: no gallery panel
            continue
        out.add(name)
    return out


def is_user_module(module) -> bool:
    """Whether a module is an activation built from a user's definition."""
    return getattr(module, "actconv_activation", False)


def output_range(name: str) -> tuple | None:
    """The (low, high) an activation's output lies in, where bounded; None where unknown or unbounded."""
    if name in BOUNDED_RANGE:
        return BOUNDED_RANGE[name]
    d = _DEFINED.get(name)
    return d.range if d else None


def unknown(kind: str, name, choices) -> str:
    """One line naming a bad choice and every valid one."""
    return f"unknown {kind} {name!r}; choose from: {', '.join(map(str, choices))}"
