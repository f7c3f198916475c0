"""No import circle in the package: every import statement, deferred ones inside functions included."""
import ast
from pathlib import Path

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


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 15 and "actconv.executors" in graph  # it walked the real package
    found = [" -> ".join(c) for c in cycles(graph)]
    assert not found, "import cycles: " + "; ".join(found)


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
