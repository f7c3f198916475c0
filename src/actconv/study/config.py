"""Study and run configs: frozen dataclasses, TOML study files, presets, validation."""
import dataclasses
import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path

from ..errors import ConfigError
from . import activations as acts
from . import search as searching
from . import userimport, zoo

OPTIMIZERS = ["sgd", "adam"]
ENGINES = ["auto", "loop", "ensemble"]
DEVICES = ["auto", "cpu", "cuda"]
DTYPES = ["float32", "float64"]
# The registries of data.py and models.py, named here so that a study validates (and a
# driver plans and stores it) without importing torch; a test keeps them equal.
DATASETS = ["mnist-5k", "mnist", "fashion-mnist", "kmnist", "digits", "cifar10"]
NPZ = "npz:"  # a user's arrays: npz:PATH
TORCHVISION_DATA = "torchvision:"  # torchvision's classification sets: torchvision:NAME
TORCHVISION_DATASETS = ["CIFAR10", "CIFAR100", "SVHN", "STL10", "EMNIST", "KMNIST", "MNIST", "FashionMNIST"]
EMNIST_SPLITS = ["byclass", "bymerge", "balanced", "letters", "digits", "mnist"]  # torchvision:EMNIST:SPLIT
MODELS = ["mlp", "tinyvgg", "resnet20"]  # and a user's factory, kind = "module:attr", and timm:NAME, torchvision:NAME
INITS = acts.INITS


@dataclass(frozen=True)
class ModelSpec:
    """One model configuration; a study names it (`[models.NAME]`)."""
    kind: str = "mlp"
    hidden_units: int = 64          # the original's width for both models
    hidden_layers: int = 1          # the original MLP has one hidden layer (MLP only)
    activate_logits: bool = False   # true reproduces the original MLP: activation on the logits
    batchnorm: bool = False         # BatchNorm before each hidden activation (MLP only)
    init: str = "default"           # PyTorch's init; "auto" picks per activation
    options: tuple[tuple[str, object], ...] = ()  # a "module:attr" or zoo kind's keywords, sorted
    fingerprint: str = ""           # hash of a "module:attr" factory's source, a zoo kind's library
                                    # version: an edit or an upgrade gives new runs


BUILTIN_MODELS = {
    "mlp": ModelSpec("mlp"),
    "mlp_original": ModelSpec("mlp", activate_logits=True),
    "tinyvgg": ModelSpec("tinyvgg"),
    "resnet20": ModelSpec("resnet20"),  # hidden_units unused: the paper's widths
}


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides one run's numbers; its canonical JSON hashes to run_id."""
    model: str                      # the model configuration's name in the study
    model_spec: ModelSpec
    activation: str
    seed: int
    n_train: int
    dataset: str = "mnist-5k"
    normalize: str = "none"         # "none" as the original (ToTensor only) or "standard"
    stratify: bool = False          # the original drew subsets with random_split (not stratified)
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    engine: str = "loop"            # engines round differently, so the engine is part of a run
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1                # the thread count changes rounding, so it is part of a run too
    diagnostics: bool = False
    grad_every: int = 1             # with diagnostics: gradient norms every k steps
    validation: int = 0             # images per seed held out of the pool and scored every epoch
    activation_def: str = ""        # a user's activation: its Definition as JSON (activations.py)
    perturb: str = ""               # a perturbed sibling: "init" (one weight's lowest bit) or "order"
    replica: int = 0                # which sibling of its kind (1..replicas); 0 for an original
    data_fingerprint: str = ""      # hash of an npz file's bytes: other data gives other runs
    # When the test set and validation split are scored: "every" epoch (and before training),
    # or after the "last" only (a search's tuning runs: their choice reads the final scores).
    # Scoring never touches the weights, so the batches are the same either way.
    evaluate: str = "every"

    @property
    def run_id(self) -> str:
        return run_id(self)

    def to_json(self, identity: bool = False) -> str:
        """Canonical JSON; identity=True keeps only what decides the numbers (for the run id)."""
        d = dataclasses.asdict(self)
        _drop_defaults(d, RunSpec, ADDED_FIELDS)
        _drop_defaults(d["model_spec"], ModelSpec, ADDED_FIELDS)
        if identity and "activation_def" in d:  # where the module was imported from is not what it computes
            d["activation_def"] = acts.Definition.from_json(d["activation_def"]).identity()
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        d = json.loads(text)
        m = d["model_spec"]
        m = {**m, "options": tuple(tuple(kv) for kv in m.get("options", ()))}
        return cls(**{**d, "model_spec": ModelSpec(**m)})


# Fields added after stores were first written: left out of the JSON while at their default,
# so that every run of an earlier store keeps its id (and resumes instead of running again).


def _drop_defaults(d: dict, cls, names) -> None:
    defaults = {f.name: f.default for f in fields(cls)}
    for name in names & set(d):
        if d[name] == defaults[name]:
            del d[name]


# Fields added to RunSpec and ModelSpec after stores existed: left out of the canonical JSON
# at their defaults, so every run id (and stored config) from before stays what it was.
ADDED_FIELDS = {"validation", "activation_def", "perturb", "replica", "data_fingerprint",
                "options", "fingerprint", "evaluate"}


def run_id(spec: RunSpec) -> str:
    """Short hash of the run's canonical JSON: the same config gives the same id anywhere."""
    return hashlib.sha256(spec.to_json(identity=True).encode()).hexdigest()[:16]


TRAIN_KEYS = {"epochs": int, "batch_size": int, "optimizer": str, "lr": float, "momentum": float,
              "weight_decay": float, "stratify": bool, "engine": str, "diagnostics": bool,
              "grad_every": int, "validation": int}
# Training settings that may also be lists in a study or comma lists on the command line:
# a grid axis, each value its own run.
AXES = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay")
GRID_KEYS = {"models": list, "activations": list, "seeds": list, "n_train": list, **TRAIN_KEYS}
# Perturbed siblings (robustness): each run of `perturb_seeds` (default: every seed) gets
# `replicas` siblings per kind in `perturb`, identical but for one perturbation.
PERTURB_KINDS = ["init", "order"]
PERTURB_KEYS = {"perturb": list, "replicas": int, "perturb_seeds": list}
MAX_REPLICAS = 100
STUDY_KEYS = {"name": str, "description": str, "dataset": str, "normalize": str, "device": str,
              "dtype": str, "threads": int, "models": dict, "grid": list, "expected": str,
              "paper": str, "claim": str, "reference_lr": float, "search": dict, **PERTURB_KEYS,
              **{k: v for k, v in GRID_KEYS.items() if k != "models"}}
MODEL_KEYS = {f.name: f.type for f in fields(ModelSpec) if f.name not in ("options", "fingerprint")}
OPTION_TYPES = (str, int, float, bool)  # a user factory's options: JSON scalars, hashed into the run id


@dataclass(frozen=True)
class Grid:
    """One block of a study: the product of models x activations x seeds x n_train."""
    models: tuple[str, ...]
    activations: tuple[str, ...]
    seeds: tuple[int, ...]
    n_train: tuple[int, ...]
    train: tuple[tuple[str, object], ...] = ()  # TRAIN_KEYS overrides, sorted; an AXES value may be a tuple
    # A search study's confirm seeds for this grid's cells (empty: the [search] table's): a
    # costly model may be confirmed on fewer fresh seeds than a cheap one, said where it is set.
    confirm_seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class StudySpec:
    """A declarative study: datasets, named models and grids of runs."""
    name: str
    grids: tuple[Grid, ...]
    models: tuple[tuple[str, ModelSpec], ...] = tuple(BUILTIN_MODELS.items())
    description: str = ""
    dataset: str = "mnist-5k"
    normalize: str = "none"
    device: str = "auto"
    dtype: str = "float32"
    threads: int = 1
    train: tuple[tuple[str, object], ...] = ()
    perturb: tuple[str, ...] = ()   # kinds of perturbed siblings (PERTURB_KINDS)
    replicas: int = 3               # siblings per kind and run (Summers & Dinneen used several)
    perturb_seeds: tuple[int, ...] = ()  # the seeds that get siblings; empty: every seed
    reference_lr: float = 0.1       # the unfair comparison's setting: the notebook's lr
    meta: tuple[tuple[str, str], ...] = ()  # paper, claim, expected: text for humans
    activation_defs: tuple[tuple[str, str], ...] = ()  # a user's activations: name -> Definition JSON
    data_fingerprint: str = ""      # an npz dataset's hash of bytes (see dataset_ref)
    search: searching.SearchSpec | None = None  # a search per cell instead of the grid's values

    def runs(self) -> list[RunSpec]:
        """Every run of the study, in grid order, without repeats."""
        models, out, seen = dict(self.models), [], set()
        defs = dict(self.activation_defs)
        device = resolve_device(self.device)
        for g in self.grids:
            grid_train = {**dict(self.train), **dict(g.train)}
            keys = sorted(grid_train)
            settings = [dict(zip(keys, values)) for values in itertools.product(
                *(v if isinstance(v, tuple) else (v,) for v in (grid_train[k] for k in keys)))]
            for m in g.models:  # resolved per model: 'auto' means another engine for another kind
                for setting in settings:  # one per value of each list axis (lr, epochs, ...)
                    train = {**setting, "engine": resolve_engine(setting.get("engine", "auto"),
                                                                 models[m].kind)}
                    for a in g.activations:
                        engine = _user_engine(a, defs.get(a, ""), train["engine"],
                                              setting.get("engine", "auto"))
                        for s in g.seeds:
                            for n in g.n_train:
                                spec = RunSpec(model=m, model_spec=models[m], activation=a, seed=s,
                                               n_train=n, dataset=self.dataset, normalize=self.normalize,
                                               device=device, dtype=self.dtype, threads=self.threads,
                                               **{**train, "engine": engine},
                                               activation_def=defs.get(a, ""),
                                               data_fingerprint=self.data_fingerprint)
                                for sibling in (spec, *self.siblings(spec)):
                                    if sibling.run_id not in seen:
                                        seen.add(sibling.run_id)
                                        out.append(sibling)
        return out

    def confirm_seeds_of(self, model: str, activation: str, n_train: int) -> tuple[int, ...]:
        """A search cell's confirm seeds: its first grid's own, else the search's."""
        for g in self.grids:
            if model in g.models and activation in g.activations and n_train in g.n_train:
                if g.confirm_seeds:
                    return g.confirm_seeds
                break
        return self.search.confirm_seeds if self.search else ()

    def siblings(self, spec: RunSpec) -> list[RunSpec]:
        """The perturbed siblings of one original run (none unless the study asks)."""
        if not self.perturb or (self.perturb_seeds and spec.seed not in self.perturb_seeds):
            return []
        return [replace(spec, perturb=k, replica=r) for k in self.perturb
                for r in range(1, self.replicas + 1)]


# What 'auto' means per model kind, measured by `make bench` (its table (2): one thread, CPU
# time, on the 2-core reference CPU): 8 seeds of MLP(64) trained as one ensemble took 0.41-0.48
# of the loop's time; 2 seeds of TinyVGG(16) took 1.00-1.34 of it, never less (convolutions
# are compute-bound and run per member either way, so stacking saves only Python overhead
# and costs copies), so TinyVGG keeps the loop and its rounding.
AUTO_ENGINE = {"mlp": "ensemble", "tinyvgg": "loop"}


def resolve_engine(engine: str, model_kind: str) -> str:
    """'auto' picks the engine the benchmark shows is faster (both record diagnostics)."""
    return AUTO_ENGINE.get(model_kind, "loop") if engine == "auto" else engine


def _user_engine(name: str, definition: str, engine: str, asked: str) -> str:
    """The ensemble runs a user's activation only where a probe found it elementwise (and
    parameter-free); elsewhere 'auto' means the loop and an explicit 'ensemble' is refused."""
    if engine != "ensemble" or not definition or acts.Definition.from_json(definition).elementwise:
        return engine
    if asked == "auto":
        return "loop"
    raise ConfigError(f"the ensemble engine runs only elementwise, parameter-free activations; "
                      f"{name!r} is not one: use --engine loop or auto")


# Device nodes without one of which no CUDA (or ROCm, or WSL) device can be visible to torch.
GPU_NODES = ["/dev/nvidiactl", "/dev/kfd", "/dev/dxg"]


def resolve_device(device: str) -> str:
    """'auto' means CUDA when there is one; asked of torch only where a GPU driver is."""
    if device != "auto":
        return device
    if not any(Path(p).exists() for p in GPU_NODES):
        return "cpu"  # and torch, ~300 MB, stays unimported in a driver that only plans
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


MAX_THREADS = 256  # torch accepts absurd counts and then crashes


def _check_type(where: str, key: str, value, kind):
    # SQLite and torch take 64-bit integers; a huge one cannot even be printed (int max str digits).
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
        raise ConfigError(f"{where}: {key} is out of range (more than 64 bits)")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be {kind.__name__}, got {_short(value)}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a finite number, got {value}")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keys(where: str, table: dict, allowed: dict) -> dict:
    bad = sorted(set(table) - set(allowed))
    if bad:
        raise ConfigError(f"{where}: unknown key {bad[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return {k: _axis(where, k, v, allowed[k]) if k in AXES else _check_type(where, k, v, allowed[k])
            for k, v in table.items()}


def _axis(where: str, key: str, value, kind):
    """A training setting or a list of them: a scalar, or a tuple of two or more distinct values."""
    if not isinstance(value, (list, tuple)):
        return _check_type(where, key, value, kind)
    if not value:
        raise ConfigError(f"{where}: {key} is an empty list; give one value or more")
    values = tuple(dict.fromkeys(_check_type(where, key, v, kind) for v in value))
    return values[0] if len(values) == 1 else values  # one value is the scalar: same runs, same ids


def _values(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _model_spec(where: str, table: dict, folder=None) -> ModelSpec:
    if zoo.is_zoo(table.get("kind")):
        return zoo_model_spec(where, table)
    if userimport.is_ref(table.get("kind")):
        return _user_model_spec(where, table, folder)
    spec = ModelSpec(**_check_keys(where, table, MODEL_KEYS))
    if spec.kind not in MODELS:
        raise ConfigError(f"{where}: " + acts.unknown("model kind", spec.kind,
                                                      MODELS + ["module:attr", "timm:NAME", "torchvision:NAME"]))
    if spec.init not in INITS:
        raise ConfigError(f"{where}: " + acts.unknown("init", spec.init, INITS))
    if spec.hidden_units <= 0 or spec.hidden_layers <= 0:
        raise ConfigError(f"{where}: hidden_units and hidden_layers must be positive")
    return spec


def _user_model_spec(where: str, table: dict, folder) -> ModelSpec:
    """kind = "module:attr": a factory(make_activation, input_shape, n_classes, **options)."""
    factory = userimport.resolve(table["kind"], f"{where}: model kind", folder)
    init = _check_type(where, "init", table.get("init", "default"), str)
    if init not in INITS:
        raise ConfigError(f"{where}: " + acts.unknown("init", init, INITS))
    options = {k: v for k, v in table.items() if k not in ("kind", "init")}
    for key, value in options.items():  # hashed into the run id and stored as JSON
        if not isinstance(value, OPTION_TYPES):
            raise ConfigError(f"{where}: option {key} must be a string, number or boolean, got {_short(value)}")
        _check_type(where, key, value, type(value))
    return ModelSpec(table["kind"], init=init, options=tuple(sorted(options.items())),
                     fingerprint=userimport.fingerprint(factory))


def zoo_model_spec(where: str, table: dict) -> ModelSpec:
    """kind = "timm:NAME" or "torchvision:NAME": the table's other keys go to the library's builder."""
    init = _check_type(where, "init", table.get("init", "default"), str)
    if init not in INITS:
        raise ConfigError(f"{where}: " + acts.unknown("init", init, INITS))
    for key, value in table.items():
        if isinstance(value, OPTION_TYPES):
            _check_type(where, key, value, type(value))
    options, fingerprint = zoo.validate(table["kind"], {k: v for k, v in table.items()
                                                        if k not in ("kind", "init")}, where)
    return ModelSpec(table["kind"], init=init, options=options, fingerprint=fingerprint)


def is_user_model(kind: str) -> bool:
    """A model kind with its own options: a user's factory, `module:attr`, or a zoo network."""
    return userimport.is_ref(kind) or zoo.is_zoo(kind)


def dataset_ref(where: str, name: str, folder=None) -> tuple[str, str]:
    """(dataset, fingerprint): a registered name as it is; npz:PATH made absolute (relative to
    the study file's folder, else the working directory) with a hash of the file's bytes."""
    where = f"{where}: " if where else ""
    if name in DATASETS:
        return name, ""
    if isinstance(name, str) and name.startswith(TORCHVISION_DATA):
        return _torchvision_dataset(where, name), ""
    if not isinstance(name, str) or not name.startswith(NPZ) or len(name) == len(NPZ):
        raise ConfigError(where + acts.unknown("dataset", name, DATASETS + [NPZ + "PATH", TORCHVISION_DATA + "NAME"]))
    path = Path(folder or ".") / Path(name[len(NPZ):]).expanduser()
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as e:
        raise ConfigError(f"{where}cannot read the npz file {path}: {e.strerror}") from None
    return NPZ + str(path.resolve()), digest


def _torchvision_dataset(where: str, name: str) -> str:
    """torchvision:NAME, or torchvision:EMNIST:SPLIT: EMNIST's six splits are six datasets, and
    no default is assumed, so one spelling names one dataset (and one set of run ids)."""
    base, _, variant = name[len(TORCHVISION_DATA):].partition(":")
    if base not in TORCHVISION_DATASETS:
        raise ConfigError(where + acts.unknown("torchvision dataset", base, TORCHVISION_DATASETS))
    if base == "EMNIST" and variant not in EMNIST_SPLITS:
        raise ConfigError(f"{where}EMNIST needs its split: torchvision:EMNIST:SPLIT, SPLIT one of "
                          f"{', '.join(EMNIST_SPLITS)}" + (f" (got {variant!r})" if variant else ""))
    if base != "EMNIST" and variant:
        raise ConfigError(f"{where}torchvision:{base} takes no split (got {variant!r}); its own train and "
                          f"test sets are used")
    return name


def _grid(where: str, table: dict, defaults: dict, models: dict, defs: dict | None = None,
          base=None) -> Grid:
    t = {**defaults, **_check_keys(where, table, {**GRID_KEYS, "confirm_seeds": object})}
    confirm = (searching.parse_seeds(t["confirm_seeds"], where, "confirm_seeds")
               if "confirm_seeds" in t else ())
    for key in ("models", "activations"):
        if any(not isinstance(v, str) for v in t.get(key) or []):
            raise ConfigError(f"{where}: {key} must be a list of names, got {_short(t[key])}")
    names = t.get("models") or list(models)
    for m in names:
        if m not in models:
            raise ConfigError(f"{where}: " + acts.unknown("model", m, models))
    try:
        activations = acts.expand(t.get("activations") or ["common_activations", *(defs or {})],
                                  defs, base)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    seeds = [_check_type(where, "seeds", s, int) for s in t.get("seeds") or [42, 451, 101]]
    n_train = [_check_type(where, "n_train", n, int) for n in t.get("n_train") or [600, 1200, 1800, 2400]]
    if any(s < 0 for s in seeds):
        raise ConfigError(f"{where}: seeds must be non-negative, got {seeds}")
    if any(n <= 0 for n in n_train):
        raise ConfigError(f"{where}: n_train must be positive, got {n_train}")
    train = {k: v for k, v in t.items() if k in TRAIN_KEYS}
    _check_train(where, train)
    return Grid(tuple(names), tuple(activations), tuple(dict.fromkeys(seeds)),
                tuple(dict.fromkeys(n_train)), tuple(sorted(train.items())), confirm)


def _check_train(where: str, t: dict) -> None:
    for key in ("epochs", "batch_size", "grad_every"):
        for v in _values(t.get(key, 1)):
            if v <= 0:
                raise ConfigError(f"{where}: {key} must be positive, got {v}")
    for v in _values(t.get("lr", 1.0)):
        if not v > 0:
            raise ConfigError(f"{where}: lr must be positive, got {v}")
    for key in ("momentum", "weight_decay", "validation"):
        for v in _values(t.get(key, 0)):
            if v < 0:
                raise ConfigError(f"{where}: {key} must be non-negative, got {v}")
    for key, choices in (("optimizer", OPTIMIZERS), ("engine", ENGINES)):
        for v in _values(t.get(key, choices[0])):
            if v not in choices:
                raise ConfigError(f"{where}: " + acts.unknown(key, v, choices))


def study_from_dict(d: dict, where: str = "study", base=None) -> StudySpec:
    """Validate a parsed study table and build the StudySpec; `base`: the study file's folder,
    where a `module:attr` activation may be imported from."""
    defs = {}
    if isinstance(d.get("activations"), dict):  # [activations.NAME] tables: a user's activations
        d = dict(d)
        for name, table in d.pop("activations").items():
            if not isinstance(table, dict):
                raise ConfigError(f"{where}: [activations.{name}] must be a table")
            name, defs[name] = acts.define(name, table, base, f"{where} [activations.{name}]")
    folder = base  # npz paths and model modules are looked for here first
    d = _check_keys(where, d, STUDY_KEYS)
    models = dict(BUILTIN_MODELS)
    for name, table in d.get("models", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [models.{name}] must be a table")
        models[name] = _model_spec(f"{where} [models.{name}]", table, folder)
    defaults = {k: v for k, v in d.items() if k in GRID_KEYS and k != "models"}
    grid_tables = d.get("grid") or [{"models": [m for m in d.get("models", {})] or ["mlp"]}]
    for table in grid_tables:  # a grid may name a network without a table: models = ["timm:resnet10t"]
        names = table.get("models") if isinstance(table, dict) else None
        for m in names if isinstance(names, list) else []:
            if isinstance(m, str) and m not in models and zoo.is_zoo(m):  # a non-name: refused below
                models[m] = zoo_model_spec(f"{where} [[grid]] models", {"kind": m})
    grids = []
    for i, table in enumerate(grid_tables):
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [[grid]] entries must be tables")
        grids.append(_grid(f"{where} [[grid]] {i + 1}", table, defaults, models, defs, base))
    dataset, data_fingerprint = dataset_ref(where, d.get("dataset", "mnist-5k"), folder)
    for key, choices in (("device", DEVICES), ("dtype", DTYPES), ("normalize", ["none", "standard"])):
        if key in d and d[key] not in choices:
            raise ConfigError(f"{where}: " + acts.unknown(key, d[key], choices))
    if not 0 < d.get("threads", 1) <= MAX_THREADS:
        raise ConfigError(f"{where}: threads must be 1 to {MAX_THREADS}, got {d['threads']}")
    used = {m for g in grids for m in g.models}
    name = _study_name(where, d)
    search = searching.from_table(where, d["search"], name) if "search" in d else None
    return _with_search(where, StudySpec(
        name=name, grids=tuple(grids),
        models=tuple((k, v) for k, v in models.items() if k in used),
        description=d.get("description", ""), dataset=dataset, data_fingerprint=data_fingerprint,
        normalize=d.get("normalize", "none"), device=d.get("device", "auto"),
        dtype=d.get("dtype", "float32"), threads=d.get("threads", 1),
        meta=tuple((k, d[k]) for k in ("paper", "claim", "expected") if k in d),
        activation_defs=_used_defs(defs, grids), reference_lr=_reference_lr(where, d),
        **_perturbation(where, d.get("perturb"), d.get("replicas"), d.get("perturb_seeds"))), search)


def _with_search(where: str, study: StudySpec, search) -> StudySpec:
    """The study with its search checked against its grids: every grid holds a validation
    split (trials are scored there, never on test); confirm seeds default to the grids' seeds."""
    own = [i + 1 for i, g in enumerate(study.grids) if g.confirm_seeds]
    if search is None:
        if own:
            raise ConfigError(f"{where}: grid {own[0]} sets confirm_seeds, which only a search "
                              f"uses: add a [search] table (or --search AXIS=RANGE)")
        return replace(study, search=None)
    for i in own:
        both = sorted(set(search.tune_seeds) & set(study.grids[i - 1].confirm_seeds))
        if both:
            raise ConfigError(f"{where}: grid {i}: confirm_seeds must be fresh seeds, disjoint from "
                              f"tune_seeds; both hold {', '.join(map(str, both[:5]))}")
    no_val = [i + 1 for i, g in enumerate(study.grids)
              if not dict(g.train).get("validation", dict(study.train).get("validation", 0))]
    if no_val:
        raise ConfigError(f"{where}: a search scores its trials on the validation split, and grid "
                          f"{no_val[0]} has none: set validation (--validation 500)")
    if not search.confirm_seeds:  # the study's seeds are what it reports: confirm on them
        seeds = tuple(dict.fromkeys(s for g in study.grids for s in g.seeds))
        try:
            search = searching.build(where, study.name, space=search.space, trials=search.trials,
                                     sampler=search.sampler, tune_seeds=search.tune_seeds,
                                     confirm_seeds=seeds, select=search.select, batch=search.batch,
                                     reference=search.reference, tune_eval=search.tune_eval)
        except ConfigError as e:
            raise ConfigError(f"{e} (confirm seeds default to the study's seeds: give fresh "
                              f"ones with --confirm-seeds)") from None
    return replace(study, search=search)


def _reference_lr(where: str, d: dict) -> float:
    lr = d.get("reference_lr", 0.1)
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"{where}: reference_lr must be a positive number, got {_short(lr)}")
    return float(lr)


def _perturbation(where: str, kinds, replicas, seeds) -> dict:
    """Validated perturb / replicas / perturb_seeds (None leaves each at its default)."""
    out = {}
    if kinds is not None:
        if not isinstance(kinds, (list, tuple)) or not kinds:
            raise ConfigError(f"{where}: perturb must be a non-empty list of {', '.join(PERTURB_KINDS)}")
        for k in kinds:
            if k not in PERTURB_KINDS:
                raise ConfigError(f"{where}: " + acts.unknown("perturbation", k, PERTURB_KINDS))
        out["perturb"] = tuple(dict.fromkeys(kinds))
    if replicas is not None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 < replicas <= MAX_REPLICAS:
            raise ConfigError(f"{where}: replicas must be 1 to {MAX_REPLICAS}, got {_short(replicas)}")
        out["replicas"] = replicas
    if seeds is not None:
        if not isinstance(seeds, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in seeds):
            raise ConfigError(f"{where}: perturb_seeds must be a list of non-negative integers")
        out["perturb_seeds"] = tuple(dict.fromkeys(seeds))
    return out


def _used_defs(defs: dict, grids) -> tuple:
    used = {a for g in grids for a in g.activations}
    return tuple((k, v.to_json()) for k, v in defs.items() if k in used)


def _study_name(where: str, d: dict) -> str:
    """The study's name, which reports may use in file names: one visible path component."""
    if "name" not in d:  # a file's stem, else a fixed name
        stem = Path(where).stem
        return stem if _safe_name(stem) else "study"
    if not _safe_name(d["name"]):
        raise ConfigError(f"{where}: name must be 1-200 printable characters without '/' or '\\', "
                          f"not starting with '.' or a space, got {_short(d['name'])}")
    return d["name"]


def _safe_name(name: str) -> bool:
    return (0 < len(name) <= 200 and name.isprintable() and name.strip() == name
            and not name.startswith(".") and "/" not in name and "\\" not in name)


def load_study(path) -> StudySpec:
    """Read a TOML study file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read study file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"study file {path} is not UTF-8 text") from None
    try:
        d = tomllib.loads(text)
    except ValueError as e:  # TOMLDecodeError, or an integer too long to convert
        raise ConfigError(f"study file {path} is not valid TOML: {e}") from None
    return study_from_dict(d, where=str(path), base=path.resolve().parent)


def preset_names() -> list[str]:
    """The presets shipped with actconv."""
    folder = resources.files("actconv.study") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> StudySpec:
    """A shipped study by name."""
    if name not in preset_names():
        raise ConfigError(acts.unknown("preset", name, preset_names()))
    text = (resources.files("actconv.study") / "presets" / f"{name}.toml").read_text()
    return study_from_dict(tomllib.loads(text), where=f"preset {name}")


def with_overrides(study: StudySpec, *, models=None, activations=None, seeds=None, n_train=None,
                   hidden_units=None, activate_logits=None, dataset=None, device=None,
                   threads=None, perturb=None, replicas=None, perturb_seeds=None,
                   search=None, trials=None, sampler=None, tune_seeds=None, confirm_seeds=None,
                   select=None, trial_batch=None, search_reference=None, tune_eval=None, **train) -> StudySpec:
    """The study with command-line flags applied to every grid (None leaves a value alone)."""
    specs = dict(study.models)
    if models is not None:
        known = {**BUILTIN_MODELS, **specs}
        for m in models:
            if m not in known and zoo.is_zoo(m):  # --models timm:resnet10t: the network by its name
                known[m] = zoo_model_spec(f"--models {m}", {"kind": m})
            if m not in known:
                raise ConfigError(acts.unknown("model", m, [*known, "timm:NAME", "torchvision:NAME"]))
        specs = {m: known[m] for m in models}
    changes = {k: v for k, v in (("hidden_units", hidden_units), ("activate_logits", activate_logits))
               if v is not None}
    if changes:
        if changes.get("hidden_units", 1) <= 0:
            raise ConfigError(f"hidden_units must be positive, got {hidden_units}")
        specs = {m: s if is_user_model(s.kind) or s.kind == "resnet20" else  # their own widths
                 replace(s, **{k: v for k, v in changes.items() if k == "hidden_units" or s.kind == "mlp"})
                 for m, s in specs.items()}
    train = {k: v for k, v in train.items() if v is not None}
    for key, value in (("seeds", seeds), ("n_train", n_train), ("hidden_units", hidden_units),
                       ("threads", threads), *train.items()):  # flags arrive typed but unbounded
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None:
                _check_type("flags", key, v, type(v))
    train = {k: _axis("flags", k, v, TRAIN_KEYS[k]) if k in AXES else v for k, v in train.items()}
    _check_train("flags", train)
    defs = {k: acts.Definition.from_json(v) for k, v in study.activation_defs}
    if activations is not None:
        activations = tuple(acts.expand(activations, defs, Path.cwd()))
    for name, values in (("seeds", seeds), ("n_train", n_train)):
        if values is not None and any(v < (0 if name == "seeds" else 1) for v in values):
            raise ConfigError(f"{name} must be {'non-negative' if name == 'seeds' else 'positive'}, got {values}")
    grids = []
    for g in study.grids:
        g_models = tuple(models) if models is not None else tuple(m for m in g.models if m in specs)
        if not g_models:
            continue
        grids.append(Grid(
            g_models, activations or g.activations,
            tuple(dict.fromkeys(seeds)) if seeds is not None else g.seeds,
            tuple(dict.fromkeys(n_train)) if n_train is not None else g.n_train,
            tuple(sorted({**dict(g.train), **train}.items())),
            () if confirm_seeds is not None else g.confirm_seeds))  # the flag is every grid's
    data_fingerprint = study.data_fingerprint
    if dataset is not None:
        dataset, data_fingerprint = dataset_ref("", dataset)
    if device is not None and device not in DEVICES:
        raise ConfigError(acts.unknown("device", device, DEVICES))
    if threads is not None and not 0 < threads <= MAX_THREADS:
        raise ConfigError(f"threads must be 1 to {MAX_THREADS}, got {threads}")
    grids = tuple(dict.fromkeys(grids))
    study = _with_search("flags", replace(study, grids=grids), _search_flags(
        study, search, trials, sampler, tune_seeds, confirm_seeds, select, trial_batch, seeds is not None,
        search_reference, tune_eval))
    return replace(study, grids=grids, models=tuple(specs.items()), activation_defs=_used_defs(defs, grids),
                   dataset=dataset or study.dataset, data_fingerprint=data_fingerprint,
                   device=device or study.device, threads=threads or study.threads,
                   **_perturbation("flags", perturb, replicas, perturb_seeds))


def _search_flags(study: StudySpec, space, trials, sampler, tune_seeds, confirm_seeds, select, batch,
                  new_seeds, reference=None, tune_eval=None):
    """The study's search with the flags applied: --search replaces its space, the others
    one value each; a search flag without any search is an error."""
    old = study.search
    given = {k: v for k, v in (("--trials", trials), ("--sampler", sampler), ("--tune-seeds", tune_seeds),
                               ("--confirm-seeds", confirm_seeds), ("--select", select),
                               ("--trial-batch", batch), ("--search-reference", reference),
                               ("--tune-eval", tune_eval))
             if v is not None}
    if not space and old is None:
        if given:
            raise ConfigError(f"{next(iter(given))} needs a search: add --search AXIS=RANGE "
                              f"(such as --search 'lr=log(0.001,1)')")
        return None
    pairs = [searching.parse_assignment(s) for s in space] if space else list(old.space)
    keep_confirm = old.confirm_seeds if old is not None and not new_seeds else None
    return searching.build(
        "flags", study.name, space=pairs,
        trials=trials if trials is not None else (old.trials if old else None),
        sampler=sampler or (old.sampler if old else None),
        tune_seeds=tune_seeds if tune_seeds is not None else (old.tune_seeds if old else None),
        confirm_seeds=confirm_seeds if confirm_seeds is not None else keep_confirm,
        select=select or (old.select if old else None),
        batch=batch if batch is not None else (old.batch if old else None),
        reference=reference if reference is not None else (old.reference if old else None),
        tune_eval=tune_eval or (old.tune_eval if old else None))


# Seconds per training sample per epoch on one thread of this project's 2-core reference
# machine, evaluation included (loop engine; seed preset: MLP(64) about 2.5e-5, TinyVGG(64)
# about 7e-3); for `actconv presets` only.
COST_PER_SAMPLE = {"mlp": 2.5e-5 / 50890, "tinyvgg": 1.7e-6}  # per parameter; per hidden unit squared


# Per training image and per scored image (each epoch scores the test set, taken as CIFAR-10's
# 10,000, and the validation split), measured by benchmarks/zoo_cost.py, one thread, CPU time.
COST_PER_IMAGE = {"resnet20": (4.1e-3, 1.25e-3), "timm:resnet10t": (2.2e-3, 0.77e-3)}
CIFAR_TEST = 10_000


def planned(study: StudySpec) -> list[tuple[RunSpec, int]]:
    """The runs a study trains, as (a representative run, how many runs it stands for). A grid
    study: each run once. A search study: per cell, trials x tune seeds plus its confirm seeds
    (and their perturbed siblings), whatever the grid's own seeds and searched values."""
    if study.search is None:
        return [(spec, 1) for spec in study.runs()]
    s, out, seen = study.search, [], set()
    for spec in study.runs():
        if spec.perturb:
            continue
        cell = replace(spec, seed=0, **{a: 0.0 for a in s.axes})
        if cell in seen:
            continue
        seen.add(cell)
        confirm = study.confirm_seeds_of(spec.model, spec.activation, spec.n_train)
        siblings = sum(len(study.siblings(replace(spec, seed=c))) for c in confirm)
        out.append((spec, s.trials * len(s.tune_seeds) + len(confirm) + siblings))
    return out


def estimate_seconds(study: StudySpec) -> float:
    """A rough wall-time estimate for one worker."""
    total = 0.0
    for spec, count in planned(study):
        m = spec.model_spec
        if m.kind in COST_PER_IMAGE:
            train, scored = COST_PER_IMAGE[m.kind]
            total += count * (spec.n_train * spec.epochs * train
                              + (spec.n_train + (spec.epochs + 1) * (CIFAR_TEST + spec.validation)) * scored)
            continue
        h = m.hidden_units
        params = 784 * h + (m.hidden_layers - 1) * h * h + 10 * h
        per = (COST_PER_SAMPLE["mlp"] * max(params, 50890) if m.kind == "mlp"
               else COST_PER_SAMPLE["tinyvgg"] * max(h, 8) ** 2)
        total += count * (per * spec.n_train * spec.epochs + 0.05)
    return total
