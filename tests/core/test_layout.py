"""The house rules of the two packages, checked on the source: no import circles in either
package (type-only imports included), the folders of ``balf`` are floors that import only the
floors below them (the order stated in docs/architecture.md), the method never imports the
paper's package, ``import balf`` is quiet and light, and each public name has one home (plus the
``balf`` top level)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "lib"
PACKAGES = ("balf", "balf_paper")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for package in PACKAGES
        for p in sorted((LIB / package).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import in the module: at the top level, deferred inside a
    function (a deferred import hides a circle, it does not remove it) or for type checkers only
    (``if TYPE_CHECKING:``: a circle of annotations is still a circle of concepts)."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [a.name for a in node.names]))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in _imports(path):
            if target not in modules:
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            graph[name].update(subs or [target])
            if len(subs) < len(names):
                graph[name].add(target)
            graph[name].discard(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_the_import_graph_has_no_circles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_a_type_only_import_counts_as_an_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from balf.pipeline import x\n"
    )
    assert ("balf.pipeline", ["x"]) in _imports(source)


# -- floors: docs/architecture.md states the order of balf's folders ------------------------------

ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _floor_lines() -> list[tuple[int, str, str]]:
    """``(height, name, line)`` of each floor in the list of docs/architecture.md."""
    text = ARCHITECTURE.read_text()
    listed = text[text.index("<!-- floors:") :]
    found = re.findall(r"^(\d+)\. `(\w+)`(.*)$", listed, flags=re.MULTILINE)
    assert [int(i) for i, _, _ in found] == list(range(len(found))), found
    return [(int(i), name, line) for i, name, line in found]


def _floors() -> dict[str, int]:
    """``{floor name: height}`` (bottom first, 0 the base)."""
    return {name: i for i, name, _ in _floor_lines()}


def _top_modules() -> dict[str, str]:
    """``{module file stem: floor}`` of the single-file modules each floor line names
    (`` `refit.py` `` on the decomposition floor); other modules are on their folder's floor."""
    return {
        stem: name for _, name, line in _floor_lines() for stem in re.findall(r"`(\w+)\.py`", line)
    }


def _floor_of(module: str, top: dict[str, str] | None = None) -> str | None:
    """The floor of a ``balf`` module (``None``: the package's ``__init__``, on top of all)."""
    parts = module.split(".")
    if parts[0] != "balf" or len(parts) == 1:
        return None
    top = _top_modules() if top is None else top
    return top.get(parts[1], parts[1]) if len(parts) == 2 else parts[1]


def _floor_violations(
    graph: dict[str, set[str]], floors: dict[str, int], top: dict[str, str]
) -> list[str]:
    """``"a -> b"`` for every import of a module by one of a lower floor (or of the top)."""
    out = []
    for module, targets in graph.items():
        here = _floor_of(module, top)
        if here is None:
            continue
        for target in targets:
            there = _floor_of(target, top)
            if there is None or floors[there] > floors[here]:
                out.append(f"{module} ({here}) -> {target} ({there or 'balf'})")
    return sorted(out)


def test_every_folder_of_balf_is_on_a_floor():
    floors = _floors()
    on_disk = {
        _floor_of(name) for name in _modules() if name.startswith("balf.") or name == "balf"
    } - {None}
    assert on_disk == set(floors), f"missing from docs/architecture.md: {on_disk - set(floors)}"


def test_each_floor_imports_only_the_floors_below_it():
    graph = {m: t for m, t in _graph().items() if m == "balf" or m.startswith("balf.")}
    assert _floor_violations(graph, _floors(), _top_modules()) == []


def test_the_floor_check_finds_an_upward_import():
    floors = {"base": 0, "layers": 1, "pipeline": 2}
    graph = {
        "balf.layers.a": {"balf.pipeline.b", "balf.errors"},
        "balf.pipeline.b": {"balf.layers.a"},
        "balf.errors": set(),
    }
    assert _floor_violations(graph, floors, {"errors": "base"}) == [
        "balf.layers.a (layers) -> balf.pipeline.b (pipeline)"
    ]


def test_the_method_never_imports_the_paper_package():
    offenders = []
    for name, path in _modules().items():
        if not name.startswith("balf.") and name != "balf":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
            offenders += [f"{name}: {t}" for t in targets if t.split(".")[0] == "balf_paper"]
    assert offenders == []


PAPER_DEPENDENCIES = ("balf_paper", "matplotlib", "pandas", "timm", "torchvision", "yaml")


def test_import_balf_is_quiet_and_loads_no_paper_dependency():
    code = (
        "import sys, balf\n"
        "import torch\n"
        "from torch import nn\n"
        "m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))\n"
        "balf.compress(m, torch.randn(32, 8), balf.BALFConfig(0.5), progress=False)\n"
        f"print(sorted(p for p in {PAPER_DEPENDENCIES!r} if p in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(LIB), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    quiet = subprocess.run(
        [sys.executable, "-c", "import balf"],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(LIB), "PATH": "/usr/bin:/bin"},
    )
    assert (quiet.stdout, quiet.stderr) == ("", "")


def test_every_name_of_a_core_module_has_one_home():
    """A module's ``__all__`` lists only what it defines (the packages' ``__init__`` gather)."""
    shims = []
    for name, path in _modules().items():
        if not name.startswith("balf.") or path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)} | {
            t.id
            for n in tree.body
            if isinstance(n, ast.Assign | ast.AnnAssign)
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(t, ast.Name)
        }
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                exported = {ast.literal_eval(e) for e in node.value.elts}
                shims += [f"{name}.{e}" for e in sorted(exported - defined)]
    assert shims == []


@pytest.mark.parametrize(
    "old, new",
    [
        ("balf.statistics", "balf.calibration.collect"),
        ("balf.config", "balf.ranks.configs"),
        ("balf.layer_kinds", "balf.layers.kind"),
        ("balf.compressor", "balf.pipeline.compressor"),
        ("balf.calibration.block_by_block", "balf.pipeline.block_by_block"),
        ("balf.layers.install", "balf.pipeline.install"),
    ],
)
def test_old_module_paths_warn_and_give_the_new_module(old, new):
    code = (
        "import importlib, warnings\n"
        "warnings.simplefilter('error')\n"
        "import balf\n"
        "try:\n"
        f"    importlib.import_module({old!r})\n"
        "except DeprecationWarning as w:\n"
        "    print(w)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(LIB), "PATH": "/usr/bin:/bin"},
    )
    assert f"{old} moved to {new}" in done.stdout, done.stderr


def test_every_moved_module_has_a_home_and_the_version_its_messages_name():
    """Each old path points to a module that exists (``balf.layer_kinds`` pointed nowhere), and
    the deprecation messages name the release that ``balf.__version__`` is (0.1.0 said 0.2)."""
    import importlib.util

    from balf import __version__
    from balf._deprecated import MOVED_MODULES

    missing = [f"{old} -> {new}" for old, new in MOVED_MODULES.items()
               if importlib.util.find_spec(new) is None]  # fmt: skip
    assert missing == []
    named = {  # every "deprecated (balf X.Y)" / "moved to ... (balf X.Y)" of the package
        match
        for path in (LIB / "balf").rglob("*.py")
        for match in re.findall(r"\(balf (\d+\.\d+)\)", path.read_text())
    }
    assert named == {".".join(__version__.split(".")[:2])}


TESTS = LIB.parent / "tests"


def test_test_modules_are_named_after_concepts_and_import_no_other_test_module():
    """Helpers shared by tests live in ``tests/_*.py`` modules; a test module importing another
    runs (or collects) it twice and hides what it needs. File names and module docstrings say
    what is tested, not which round or issue asked for it."""
    history = re.compile(r"round\s*\d|\bissue\s+\d", re.IGNORECASE)
    problems = []
    for path in sorted(TESTS.rglob("*.py")):
        if history.search(path.stem.replace("_", " ")):
            problems.append(f"{path.name}: named after history")
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree) or ""
        if history.search(doc):
            problems.append(f"{path.name}: its docstring names an issue or round")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("test_"):
                problems.append(f"{path.name} imports {node.module}")
            if isinstance(node, ast.Import):
                problems += [f"{path.name} imports {a.name}" for a in node.names
                             if a.name.startswith("test_")]  # fmt: skip
    assert problems == []
