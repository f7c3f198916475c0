"""The package's layers: every import statement (deferred ones inside functions included) goes
down the table in DESIGN.md, none closes a circle, and a training process loads neither pandas
nor scipy."""
import ast
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "actconv"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package at root (subpackages included)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that one module's import statements (anywhere in the file) run.

    Importing a.b.c runs a/__init__ and a/b/__init__ first: those count too, except the
    packages the importer itself lies in (they are already being imported).
    """
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                parts = package.split(".")
                assert node.level <= len(parts), f"{name}: relative import beyond the top-level package"
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            # `from .x import y`: y may be a submodule of x (imported too) or a name in x
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name that is not a module: its module
                target = target.rpartition(".")[0]
            while target and target not in own:      # the module and the packages above it
                found.add(target)
                target = target.rpartition(".")[0]
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    files = module_names(root)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected group of modules that import each other."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):  # Tarjan's algorithm; the package has a few dozen modules, so recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph, group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & group):
            if w == start:
                return [*path, start]
            if w not in seen:
                seen.add(w)
                paths.append([*path, w])
    raise AssertionError("a strongly connected group always holds a cycle")


# What each layer may import (DESIGN.md's table; each package's docstring says the same).
# `run.store` is the one module of `run` that the analysis and the report read: the store's
# tables. `study` serves those two names only: its data and models build tensors.
LAYERS = {
    "errors": set(),
    "study": {"errors"},
    "train": {"errors", "study"},
    "run": {"errors", "study", "train"},
    "analysis": {"errors", "study", "run.store"},
    "report": {"errors", "study", "run.store", "analysis"},
    "plots": {"report"},      # re-exports the figures
    "claims": {"analysis"},   # re-exports the findings
    "cli": {"errors", "study", "train", "run", "analysis", "report"},
    "": {"errors", "study", "train", "run", "analysis", "report"},  # actconv/__init__: lazy names
}
NAMES_ONLY = {"analysis": {"study.data", "study.models"}, "report": {"study.data", "study.models"}}


def unit(module: str, top: str) -> str:
    """A module's place in LAYERS: its layer, or `run.store`, or a study module by name."""
    parts = module.split(".")[1:] if module != top else []
    if parts[:2] == ["run", "store"]:
        return "run.store"
    return parts[0] if parts else ""


def layer_violations(graph: dict[str, set[str]], top: str = "actconv", layers=None,
                     names_only=None) -> list[str]:
    """Every import that goes against the table, as 'importer -> imported'."""
    layers, names_only = layers or LAYERS, names_only or NAMES_ONLY
    bad = []
    for importer, targets in sorted(graph.items()):
        layer = unit(importer, top).split(".")[0]
        assert layer in layers, f"{importer}: a module outside every layer; add it to LAYERS"
        may = layers[layer] | {layer}
        for target in sorted(targets):
            to = unit(target, top)
            if to == "run.store":
                ok = bool({"run", "run.store"} & may)
            elif to == "run" and "run" not in may:
                ok = "run.store" in may and target == f"{top}.run"  # the package, on the way to its store
            else:
                ok = to in may
            if not ok or ".".join(target.split(".")[1:3]) in names_only.get(layer, ()):
                bad.append(f"{importer} -> {target}")
    return bad


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 15 and "actconv.run.queue" in graph  # it walked the real package
    found = [" -> ".join(c) for c in cycles(graph)]
    assert not found, "import cycles: " + "; ".join(found)


def test_every_import_goes_down_the_layer_table():
    graph = import_graph(PACKAGE)
    assert {unit(m, "actconv") for m in graph} >= {"study", "train", "run", "run.store", "analysis", "report"}
    bad = layer_violations(graph)
    assert not bad, "imports against the layer table: " + "; ".join(bad)


def test_each_layer_says_what_it_holds_and_may_import():
    for layer in ("study", "train", "run", "analysis", "report"):
        doc = importlib.import_module(f"actconv.{layer}").__doc__ or ""
        may = doc[doc.index("May import"):] if "May import" in doc else ""
        assert may, f"actconv.{layer}: its docstring says nothing of what it may import"
        for other in LAYERS[layer]:
            assert f"actconv.{other}" in may, f"actconv.{layer}'s docstring leaves out actconv.{other}"
        for path in sorted((PACKAGE / layer).glob("*.py")):  # and it names every module it holds
            assert path.stem == "__init__" or f"`{path.stem}`" in doc, f"actconv.{layer} does not name {path.stem}"


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root / "pkg"


def test_the_walker_finds_deferred_relative_and_subpackage_imports(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\n",                       # b is a submodule
        "pkg/b.py": "def f():\n    from .sub.c import g\n",   # deferred, into a subpackage
        "pkg/sub/__init__.py": "from .c import g\n",
        "pkg/sub/c.py": "import os\nfrom .. import a\n",        # two levels up
        "pkg/d.py": "import pkg.sub.c\nfrom .a import name_not_module\n",
    })
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub", "pkg.sub.c"}, "pkg.sub": {"pkg.sub.c"},
                     "pkg.sub.c": {"pkg.a"}, "pkg.d": {"pkg.sub", "pkg.sub.c", "pkg.a"}}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    (pkg / "sub" / "c.py").write_text("import os\n", encoding="utf-8")
    assert cycles(import_graph(pkg)) == []


def test_the_layer_check_finds_an_upward_import_and_a_name_only_breach(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/errors.py": "",
        "pkg/study/__init__.py": "", "pkg/study/data.py": "from .. import errors\n",
        "pkg/study/names.py": "",
        "pkg/train/__init__.py": "", "pkg/train/loop.py": "from ..study import data\n",
        "pkg/run/__init__.py": "", "pkg/run/store.py": "from ..train import loop\n",
        "pkg/run/queue.py": "from . import store\n",
        "pkg/analysis/__init__.py": "", "pkg/analysis/stats.py": "from ..run.store import x\nfrom ..study import names\n",
        "pkg/report/__init__.py": "", "pkg/report/page.py": "from ..analysis import stats\n",
    })
    graph = import_graph(pkg)
    assert layer_violations(graph, "pkg") == []
    (pkg / "study" / "data.py").write_text("def f():\n    from ..train import loop\n")  # upward, deferred
    (pkg / "analysis" / "stats.py").write_text("from ..run import queue\nfrom ..study.data import y\n")
    (pkg / "report" / "page.py").write_text("from ..study import names\n")
    assert layer_violations(import_graph(pkg), "pkg") == [
        "pkg.analysis.stats -> pkg.run.queue", "pkg.analysis.stats -> pkg.study.data",
        "pkg.study.data -> pkg.train", "pkg.study.data -> pkg.train.loop"]


HEAVY = ("pandas", "scipy")

TRAIN = """
from actconv.study import data as datasets
from actconv.study.config import ModelSpec, RunSpec
from actconv.train.ensemble import train_ensemble
from actconv.train.loop import train_run
data = datasets.load("mnist-5k")
spec = RunSpec(model="m", model_spec=ModelSpec("mlp", hidden_units=8), activation="relu", seed=1,
               n_train=32, epochs=1, batch_size=16, diagnostics=True)
assert train_run(spec, data).diagnostics
for r in train_ensemble([RunSpec(**{**spec.__dict__, "seed": s, "engine": "ensemble"}) for s in (1, 2)], data):
    assert r.diagnostics
"""


def loaded_after(code: str) -> list[str]:
    """The heavy modules in sys.modules of a fresh interpreter after running `code`."""
    probe = code + f"\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(probe)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [m for m in proc.stdout.strip().splitlines()[-1].split(",") if m] if proc.stdout.strip() else []


@pytest.mark.parametrize("code", [
    "import actconv.train.loop, actconv.train.ensemble" + TRAIN,  # the loop and the ensemble, diagnostics on
    "import actconv.run.worker",                            # what the process pool's fork server imports
    "import actconv.run.ray_tasks\nfrom actconv.run.execution import execute_unit",  # what a Ray task imports
], ids=["training", "pool-worker", "ray-task"])
def test_training_processes_import_neither_pandas_nor_scipy(code):
    assert loaded_after(code) == []


def test_the_probe_sees_pandas_where_it_is_imported():
    assert "pandas" in loaded_after("import actconv.analysis.diagnostics")  # the check can fail
