"""The layout holds: no import rings, dependencies one way (tui -> trainer -> profilers),
every folder installed and saying what it holds, files near 300 lines.

Plain Python on the source (``ast``), nothing imported: a ring or a wrong-way import is
found before it can bite at import time. Every import counts, the ones inside a function
too: a lazy import still ties two modules together.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 330         # "near 300": a file past this is usually two ideas


def package_dirs(root: Path) -> dict[str, Path]:
    """Import name -> folder, as pyproject.toml's package-dir installs them."""
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: root / folder for name, folder in setup["package-dir"].items()}


def modules(dirs: dict[str, Path]) -> dict[str, Path]:
    """Every module's dotted name -> its file (a package is its __init__.py)."""
    out = {}
    for top, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([top, *parts])] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `name` imports. ``from pkg import mod`` is an import of
    pkg.mod (pkg is being imported already: its own modules do not tie back to it);
    ``from mod import name`` is an import of mod; parent packages are left out."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            subs = {f"{source}.{a.name}" for a in node.names} & known
            out.update(subs)
            if len(subs) < len(node.names):    # names defined in `source` itself
                out.add(source)
    return {m for m in out if m in known and m != name}


def import_graph(dirs: dict[str, Path]) -> dict[str, set[str]]:
    mods = modules(dirs)
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def rings(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan): each is a set of
    modules that import each other, directly or around a ring."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            ring = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                ring.append(w)
                if w == v:
                    break
            if len(ring) > 1:
                found.append(sorted(ring))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def wrong_way(dirs: dict[str, Path]) -> list[str]:
    """Imports against tui -> trainer -> profilers (and the public API, lsml_tui.watch and
    its integrations, -> trainer), and textual in the trainer."""
    forbidden = {"lsml_tui.profilers": ("lsml_tui.trainer", "lsml_tui.tui",
                                        "lsml_tui.integrations", "textual"),
                 "lsml_tui.trainer": ("lsml_tui.tui", "lsml_tui.integrations", "textual")}
    bad = []
    for name, path in modules(dirs).items():
        layer = next((p for p in forbidden if name == p or name.startswith(p + ".")), None)
        if layer is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                       else [])
            for target in targets:
                if any(target == f or target.startswith(f + ".") for f in forbidden[layer]):
                    bad.append(f"{name} imports {target} (line {node.lineno})")
    return sorted(bad)


# -- the project ------------------------------------------------------------------


def test_no_module_imports_one_that_imports_it_back():
    found = rings(import_graph(package_dirs(ROOT)))
    assert found == [], "import rings: " + "; ".join(" <-> ".join(r) for r in found)


def test_dependencies_flow_from_tui_to_trainer_to_profilers():
    assert wrong_way(package_dirs(ROOT)) == []


def test_every_folder_is_installed_and_says_what_it_holds_and_may_import():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    for name, path in modules(package_dirs(ROOT)).items():
        if path.name != "__init__.py":
            continue
        assert name in listed, f"{name} ({path.parent}) is missing from pyproject's packages"
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "import" in doc, f"{path}: the docstring says what may be imported here"


def test_files_stay_near_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules(package_dirs(ROOT)).values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"past {MAX_LINES} lines (split where the ideas part): {long}"


# -- the checks themselves can fail -----------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"lsml_tui.trainer": root / "trainer", "lsml_tui.profilers": root / "profilers",
            "lsml_tui.tui": root / "tui"}


def test_a_ring_through_three_modules_and_a_lazy_import_is_found(tmp_path):
    dirs = write_tree(tmp_path, {
        "trainer/__init__.py": "",
        "trainer/a.py": "from lsml_tui.trainer.b import f\n",
        "trainer/b.py": "from . import c\n",
        "trainer/c.py": "def g():\n    from .a import x   # lazy, still a ring\n",
        "trainer/d.py": "from lsml_tui.trainer import a\n",      # into the ring, not part of it
        "trainer/sub/__init__.py": "from .e import E\n",       # a package and its own module
        "trainer/sub/e.py": "from lsml_tui.trainer.sub import helper\nE = 1\n",
        "trainer/sub/helper.py": "",
    })
    assert rings(import_graph(dirs)) == [["lsml_tui.trainer.a", "lsml_tui.trainer.b",
                                          "lsml_tui.trainer.c"]]


def test_a_package_that_takes_a_name_back_from_its_own_module_is_a_ring(tmp_path):
    dirs = write_tree(tmp_path, {
        "trainer/__init__.py": "",
        "trainer/sub/__init__.py": "from .e import E\nX = 1\n",
        "trainer/sub/e.py": "from lsml_tui.trainer.sub import X\nE = X\n",
    })
    assert rings(import_graph(dirs)) == [["lsml_tui.trainer.sub", "lsml_tui.trainer.sub.e"]]


def test_imports_against_the_flow_are_found(tmp_path):
    dirs = write_tree(tmp_path, {
        "profilers/__init__.py": "",
        "profilers/p.py": "import lsml_tui.trainer.loop\n",
        "trainer/__init__.py": "",
        "trainer/t.py": "def f():\n    from textual.app import App\n",
        "trainer/u.py": "from lsml_tui.profilers import p\n",      # the right way
        "tui/__init__.py": "",
        "tui/v.py": "from lsml_tui.trainer import t\n",            # the right way
    })
    assert wrong_way(dirs) == ["lsml_tui.profilers.p imports lsml_tui.trainer.loop (line 1)",
                               "lsml_tui.trainer.t imports textual.app (line 2)"]
