"""The project's shape (issue 26): the import graph, the scripts' size, and the README's
reading guide, checked on the files themselves so that a change breaking them fails here."""
import ast
import importlib
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("train_image", "train_audio", "separate")


def python_files(skip=("tests", ".venv", "runs", "data")):
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip and not d.startswith(".")]
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(folder, f)


def imported_modules(path: str) -> set[str]:
    """Every module a file imports, at any depth (function-level imports too); relative
    imports inside surf_mini/ are resolved to ``surf_mini.<name>``."""
    tree = ast.parse(open(path).read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:                                   # from .x import y / from . import x
                base = "surf_mini" + (f".{node.module}" if node.module else "")
                out |= {base} if node.module else {f"surf_mini.{a.name}" for a in node.names}
            elif node.module:
                out.add(node.module)
                if node.module == "surf_mini":               # from surf_mini import x
                    out |= {f"surf_mini.{a.name}" for a in node.names}
    return out


def script_importers(files) -> list[str]:
    return [os.path.relpath(p, ROOT) for p in files
            if imported_modules(p) & set(SCRIPTS) and os.path.basename(p)[:-3] not in SCRIPTS]


def test_nothing_outside_tests_imports_a_script(tmp_path):
    assert script_importers(python_files()) == []
    bad = tmp_path / "bench_x.py"                            # the check can fail
    bad.write_text("def f():\n    import train_audio\n")
    assert script_importers([str(bad)]) == [os.path.relpath(str(bad), ROOT)]


def library_graph(extra: dict | None = None) -> dict[str, set[str]]:
    pkg = os.path.join(ROOT, "surf_mini")
    graph = {}
    for f in sorted(os.listdir(pkg)):
        if f.endswith(".py") and f != "__init__.py":
            deps = imported_modules(os.path.join(pkg, f))
            graph[f[:-3]] = {d.split(".")[1] for d in deps if d.startswith("surf_mini.")} - {f[:-3]}
    graph.update(extra or {})
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> the modules it imports), or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = "done"
        return None
    for n in sorted(graph):
        if n not in state and (found := visit(n, [n])):
            return found
    return None


def test_the_library_has_no_import_circle_and_imports_no_script_or_builder():
    graph = library_graph()
    assert cycle(graph) is None, cycle(graph)
    for f in os.listdir(os.path.join(ROOT, "surf_mini")):
        if f.endswith(".py"):
            deps = imported_modules(os.path.join(ROOT, "surf_mini", f))
            assert not deps & set(SCRIPTS), f
            assert not any(d == "prepare" or d.startswith("prepare.") for d in deps), f
    assert cycle(library_graph({"flow": {"methods"}})) is not None      # a circle is caught


@pytest.mark.parametrize("script", ["train_image.py", "train_audio.py"])
def test_training_scripts_stay_short(script):
    assert len(open(os.path.join(ROOT, script)).read().splitlines()) <= 350


def reading_guide() -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    return text[text.index("## Reading guide"):text.index("## Training on GPUs")]


def missing_names(guide: str) -> list[str]:
    """The ``test_x.py::test_y`` and ``module.function`` names of the reading guide that do
    not exist (modules of surf_mini only)."""
    missing = []
    for f, name in re.findall(r"`(test_\w+)\.py::(\w+)`", guide):
        if not re.search(rf"^def {name}\(", open(os.path.join(ROOT, "tests", f + ".py")).read(), re.M):
            missing.append(f"{f}.py::{name}")
    modules = {f[:-3] for f in os.listdir(os.path.join(ROOT, "surf_mini")) if f.endswith(".py")}
    for mod, name in re.findall(r"`(\w+)\.(\w+)`", guide):
        if mod in modules and name != "py" and not hasattr(importlib.import_module(f"surf_mini.{mod}"), name):
            missing.append(f"{mod}.{name}")
    return missing


def test_the_reading_guide_names_only_what_exists():
    guide = reading_guide()
    assert len(re.findall(r"`test_\w+\.py::\w+`", guide)) >= 10
    assert missing_names(guide) == []
    assert missing_names(guide + " `flow.no_such_function` `test_pit.py::test_gone`") == \
        ["test_pit.py::test_gone", "flow.no_such_function"]


def test_readme_is_at_most_18_kb():
    assert os.path.getsize(os.path.join(ROOT, "README.md")) <= 18 * 1024


def missing_attributes(path: str) -> list[str]:
    """``alias.name`` uses in a file, for aliases of surf_mini modules (``from surf_mini import
    x as X``, ``import surf_mini.x as X``), whose module has no ``name``: a name moved
    elsewhere and left behind in a caller."""
    tree = ast.parse(open(path).read(), path)
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "surf_mini":
            aliases.update({a.asname or a.name: f"surf_mini.{a.name}" for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
            aliases.update({a.asname or a.name: f"surf_mini.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith("surf_mini.")})
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = importlib.import_module(aliases[node.value.id])
            if not hasattr(module, node.attr):
                out.append(f"{os.path.relpath(path, ROOT)}: {node.value.id}.{node.attr}")
    return out


def test_every_module_attribute_used_exists(tmp_path):
    files = [p for p in python_files() if not p.startswith(os.path.join(ROOT, "tests"))]
    assert [m for p in files for m in missing_attributes(p)] == []
    stale = tmp_path / "bench_y.py"                          # a name left behind is caught
    stale.write_text("from surf_mini import metrics as M\nM.dnsmos_session()\n")
    assert missing_attributes(str(stale)) == [f"{os.path.relpath(str(stale), ROOT)}: M.dnsmos_session"]
