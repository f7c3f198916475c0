"""A search per cell: the space of training settings, its budget of trials, its sampler and
the two disjoint sets of seeds (tuning, confirming), parsed from a `[search]` table or flags.

Ranges are read by a regular expression, never evaluated: `log(a,b)`, `uniform(a,b)`,
`int(a,b)` or a list `[v, ...]`.
"""
import hashlib
import math
import re
from dataclasses import dataclass

from ..errors import ConfigError

# Numeric training settings a search may vary, with the least value each may take (lr must be
# positive, the others non-negative): the ensemble engine's optimizers treat them elementwise.
SEARCH_AXES = {"lr": 0.0, "momentum": 0.0, "weight_decay": 0.0}
POSITIVE = {"lr"}
KINDS = ("log", "uniform", "int", "list")
SAMPLERS = ("random", "tpe", "qmc")
SELECT = ("val_loss", "val_accuracy")  # what a trial is scored on: the validation split, never test
DEFAULT_TUNE_SEEDS = (1, 2, 3)
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CALL = re.compile(rf"^\s*(log|uniform|int)\s*\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)\s*$")
_LIST = re.compile(r"^\s*\[(.*)\]\s*$")
_SEEDS = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
MAX_SEEDS = 10_000  # a typo such as 1-1000000 would plan a million runs


@dataclass(frozen=True)
class Range:
    """One axis' searched values: a log or uniform interval, integers, or a list."""
    kind: str
    low: float = 0.0
    high: float = 0.0
    values: tuple[float, ...] = ()  # kind "list" only, in the order given

    @property
    def bounds(self) -> tuple[float, float]:
        """The lowest and highest value searched."""
        return (min(self.values), max(self.values)) if self.kind == "list" else (self.low, self.high)

    def text(self) -> str:
        if self.kind == "list":
            return "[" + ", ".join(f"{v:g}" for v in self.values) + "]"
        return f"{self.kind}({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class SearchSpec:
    """The search of a study: per (model, activation, n_train), `trials` settings from `space`,
    each trained on `tune_seeds` and scored on validation; the best on `confirm_seeds`."""
    space: tuple[tuple[str, Range], ...]
    trials: int = 12                # the same budget for every activation (Eger et al.: 200 there)
    sampler: str = "tpe"            # Optuna's default; random and qmc for a space-filling baseline
    tune_seeds: tuple[int, ...] = DEFAULT_TUNE_SEEDS
    confirm_seeds: tuple[int, ...] = ()  # fresh seeds: the test numbers come from these alone
    seed: int = 0                   # the sampler's, from the study name: the same study asks the same trials
    select: str = "val_loss"        # mean final val_loss (lower wins) or val_accuracy (higher wins)
    # Trials asked per cell before any is told: more trains a cell's trials and seeds as one
    # ensemble unit (they differ only elementwise); for tpe it changes which trials are asked
    # (results reach the sampler a batch later), so it is part of the search.
    batch: int = 1
    # Also train every cell at the study's reference setting (reference_lr, momentum and weight
    # decay 0 on the searched axes) on the confirm seeds, so the reference-lr views compare like
    # with like. Off by default: it adds one confirm set per cell (a third to a half more runs
    # for the README's and seed-fair's budgets), and existing studies keep their cost.
    reference: bool = False
    # When a tuning run scores its test set and validation split: "every" epoch (curves for
    # every trial), or after the "last" only: all that choosing and the winner's curse read,
    # at about half a small network's training time (the confirm runs keep their curves).
    tune_eval: str = "every"

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(a for a, _ in self.space)


def sampler_seed(study_name: str) -> int:
    """A 32-bit seed from the study's name (stable across Python runs, unlike hash())."""
    return int(hashlib.sha256(study_name.encode()).hexdigest()[:8], 16)


def parse_range(axis: str, text, where: str = "search") -> Range:
    """One axis' range from `log(a,b)`, `uniform(a,b)`, `int(a,b)`, `[v, ...]` or a TOML list."""
    if axis not in SEARCH_AXES:
        raise ConfigError(f"{where}: cannot search {axis!r}; searchable: {', '.join(SEARCH_AXES)}")
    if isinstance(text, (list, tuple)):
        values = [_number(where, axis, v) for v in text]
        return _checked(where, axis, Range("list", values=tuple(dict.fromkeys(values))))
    if not isinstance(text, str):
        raise ConfigError(f"{where}: {axis} must be log(a,b), uniform(a,b), int(a,b) or a list, got {text!r}")
    m = _CALL.match(text)
    if m:
        kind, low, high = m.group(1), float(m.group(2)), float(m.group(3))
        if kind == "int" and not (low.is_integer() and high.is_integer()):
            raise ConfigError(f"{where}: {axis}: int(a,b) needs whole numbers, got {text.strip()!r}")
        return _checked(where, axis, Range(kind, low, high))
    m = _LIST.match(text)
    if m:
        items = [v.strip() for v in m.group(1).split(",") if v.strip()]
        bad = [v for v in items if not re.fullmatch(NUMBER, v)]
        if bad:
            raise ConfigError(f"{where}: {axis}: {bad[0]!r} is not a number")
        return _checked(where, axis, Range("list", values=tuple(dict.fromkeys(float(v) for v in items))))
    raise ConfigError(f"{where}: {axis}: expected log(a,b), uniform(a,b), int(a,b) or [v, ...], "
                      f"got {text.strip()!r}")


def _number(where: str, axis: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where}: {axis}: {v!r} is not a number")
    return float(v)


def _checked(where: str, axis: str, r: Range) -> Range:
    if r.kind == "list" and not r.values:
        raise ConfigError(f"{where}: {axis}: the list of values is empty")
    low, high = r.bounds
    if not all(math.isfinite(v) for v in (low, high)):
        raise ConfigError(f"{where}: {axis}: bounds must be finite numbers")
    if r.kind != "list" and not low < high:
        raise ConfigError(f"{where}: {axis}: {r.text()} is empty or reversed: the lower bound "
                          f"must be less than the upper")
    if r.kind == "log" and low <= 0:
        raise ConfigError(f"{where}: {axis}: a log range needs bounds above 0, got {r.text()}")
    if axis in POSITIVE and low <= 0:
        raise ConfigError(f"{where}: {axis} must be positive, but {r.text()} reaches {low:g}")
    if low < SEARCH_AXES[axis]:
        raise ConfigError(f"{where}: {axis} must be non-negative, but {r.text()} reaches {low:g}")
    return r


def parse_assignment(text: str, where: str = "--search") -> tuple[str, Range]:
    """`axis=range` as the command line gives it."""
    axis, eq, rest = text.partition("=")
    if not eq:
        raise ConfigError(f"{where}: expected AXIS=RANGE such as lr=log(0.001,1), got {text!r}")
    return axis.strip(), parse_range(axis.strip(), rest, where)


def parse_seeds(value, where: str, key: str) -> tuple[int, ...]:
    """Seeds from a list of integers or text such as `1,2,3` or `101-130`."""
    if isinstance(value, str):
        out = []
        for part in (p for p in value.split(",") if p.strip()):
            m = _SEEDS.match(part)
            if not m:
                raise ConfigError(f"{where}: {key}: expected seeds such as 1,2,3 or 101-130, got {part.strip()!r}")
            a, b = int(m.group(1)), int(m.group(2) or m.group(1))
            if b < a:
                raise ConfigError(f"{where}: {key}: the seed range {part.strip()} is reversed")
            if b - a >= MAX_SEEDS:
                raise ConfigError(f"{where}: {key}: more than {MAX_SEEDS} seeds in {part.strip()}")
            out += range(a, b + 1)
    elif isinstance(value, (list, tuple)):
        out = list(value)
        if any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63 for s in out):
            raise ConfigError(f"{where}: {key} must be non-negative integers, got {value!r}")
    else:
        raise ConfigError(f"{where}: {key} must be a list of seeds or text such as 101-130, got {value!r}")
    if not out:
        raise ConfigError(f"{where}: {key} is empty")
    return tuple(dict.fromkeys(out))


def build(where: str, study_name: str, *, space, trials=None, sampler=None, tune_seeds=None,
          confirm_seeds=None, select=None, batch=None, reference=None, tune_eval=None) -> SearchSpec:
    """A validated SearchSpec; `space` is a list of (axis, Range) (each axis once)."""
    axes = [a for a, _ in space]
    if not space:
        raise ConfigError(f"{where}: a search needs at least one axis, such as lr=log(0.001,1)")
    if len(set(axes)) < len(axes):
        twice = next(a for a in axes if axes.count(a) > 1)
        raise ConfigError(f"{where}: {twice} is searched twice")
    trials = 12 if trials is None else trials
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"{where}: trials must be a positive integer, got {trials!r}")
    sampler = sampler or "tpe"
    if sampler not in SAMPLERS:
        raise ConfigError(f"{where}: unknown sampler {sampler!r}; choose from: {', '.join(SAMPLERS)}")
    batch = 1 if batch is None else batch
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= trials:
        raise ConfigError(f"{where}: batch must be 1 to trials ({trials}), got {batch!r}")
    select = select or "val_loss"
    if select not in SELECT:
        raise ConfigError(f"{where}: unknown selection metric {select!r}; choose from: {', '.join(SELECT)}")
    reference = False if reference is None else reference
    if not isinstance(reference, bool):
        raise ConfigError(f"{where}: reference must be true or false, got {reference!r}")
    tune_eval = tune_eval or "every"
    if tune_eval not in TUNE_EVAL:
        raise ConfigError(f"{where}: unknown tune_eval {tune_eval!r}; choose from: {', '.join(TUNE_EVAL)}")
    tune = parse_seeds(tune_seeds, where, "tune_seeds") if tune_seeds is not None else DEFAULT_TUNE_SEEDS
    confirm = parse_seeds(confirm_seeds, where, "confirm_seeds") if confirm_seeds is not None else ()
    both = sorted(set(tune) & set(confirm))
    if both:
        raise ConfigError(f"{where}: confirm_seeds must be fresh seeds, disjoint from tune_seeds; "
                          f"both hold {', '.join(map(str, both[:5]))}")
    return SearchSpec(tuple(space), trials, sampler, tune, confirm, sampler_seed(study_name), select, batch,
                      reference, tune_eval)


SEARCH_KEYS = ("space", "trials", "sampler", "tune_seeds", "confirm_seeds", "select", "batch", "reference",
               "tune_eval")
TUNE_EVAL = ("every", "last")


def from_table(where: str, table, study_name: str) -> SearchSpec:
    """The `[search]` table of a study: space = {lr = "log(0.001, 1)", momentum = [0, 0.9]}
    (or a list of "axis=range" strings), trials, sampler, tune_seeds, confirm_seeds, select, batch,
    reference, tune_eval."""
    where = f"{where} [search]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - set(SEARCH_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(SEARCH_KEYS)}")
    space = table.get("space", {})
    if isinstance(space, dict):
        pairs = [(a, parse_range(a, r, where)) for a, r in space.items()]
    elif isinstance(space, list) and all(isinstance(s, str) for s in space):
        pairs = [parse_assignment(s, where) for s in space]
    else:
        raise ConfigError(f"{where}: space must be a table of axis = range, got {space!r}")
    return build(where, study_name, space=pairs, trials=table.get("trials"),
                 sampler=table.get("sampler"), tune_seeds=table.get("tune_seeds"),
                 confirm_seeds=table.get("confirm_seeds"), select=table.get("select"),
                 batch=table.get("batch"), reference=table.get("reference"),
                 tune_eval=table.get("tune_eval"))


def from_dict(d: dict) -> SearchSpec:
    """A SearchSpec back from its `dataclasses.asdict` form (as a store's studies table keeps it)."""
    space = tuple((a, Range(r["kind"], r["low"], r["high"], tuple(r["values"]))) for a, r in d["space"])
    return SearchSpec(space, d["trials"], d["sampler"], tuple(d["tune_seeds"]),
                      tuple(d["confirm_seeds"]), d["seed"], d.get("select", "val_loss"), d.get("batch", 1),
                      d.get("reference", False), d.get("tune_eval", "every"))
