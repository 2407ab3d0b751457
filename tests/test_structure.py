"""The package's shape: every `robot_emotion` import (top-level or inside a function) is an
edge; the module graph has no circles, and no import climbs from a lower room to a higher one
(LAYERS, the README's Layout)."""

import ast
from pathlib import Path

import pytest

from conftest import REPO

PKG = REPO / "robot_emotion"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import submodule` imports the submodule; `from mod import name` the module
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names
                ]
            for t in targets:
                if t in files and t != mod and not mod.startswith(t + "."):  # a package's own __init__
                    graph[mod].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out, n = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 40 and graph["robot_emotion.cli.commands"]  # the walk really saw the package
    assert find_cycles(graph) == []


# Rooms from the bottom up. A module may import its own room and the rooms below it, never one
# above: the components know nothing of the wire or the node; the wire nothing of the node; the
# node nothing of training, the embedding API or the command line. (`robot_emotion` itself, the
# package's constants and its façade, may be imported from anywhere and is not checked.)
LAYERS = [
    ("base", ["errors", "paths", "config", "config_rules", "compute", "clock", "media", "shared_models", "threads"]),
    ("components", ["audio", "vision", "sources", "features", "models", "data", "people"]),
    ("bus", ["bus"]),
    ("node", ["node"]),
    ("train", ["train"]),
    ("api", ["api"]),
    ("cli", ["cli", "__main__"]),
]


def layer_of(module: str) -> int | None:
    if module == "robot_emotion":
        return None
    room = module.split(".")[1]
    for rank, (_, rooms) in enumerate(LAYERS):
        if room in rooms:
            return rank
    raise AssertionError(f"{module} is in no room of LAYERS: add it to one (and to the README's Layout)")


def climbing_imports(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, targets in graph.items():
        low = layer_of(mod)
        for t in targets:
            high = layer_of(t)
            if low is not None and high is not None and high > low:
                out.append(f"{mod} ({LAYERS[low][0]}) imports {t} ({LAYERS[high][0]})")
    return sorted(out)


def test_no_import_climbs_to_a_higher_room():
    assert climbing_imports(import_graph()) == []


def test_climb_finder_sees_a_climb():
    graph = {
        "robot_emotion.audio.vad": {"robot_emotion.node.core"},
        "robot_emotion.node.core": {"robot_emotion.audio.vad"},
    }
    assert climbing_imports(graph) == ["robot_emotion.audio.vad (components) imports robot_emotion.node.core (node)"]


def test_cycle_finder_sees_a_circle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_readme_layout_is_the_tree():
    """README's Layout tree (one line per room) and docs/layout.md (one line per module) are
    generated from the modules (tools/readme_layout.py --write)."""
    from conftest import load_tool

    tool = load_tool("tools/readme_layout")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert tool.block() in readme, "README layout is stale: run python tools/readme_layout.py --write"
    modules = (REPO / "docs" / "layout.md").read_text(encoding="utf-8")
    assert tool.modules_block() in modules, "docs/layout.md is stale: run python tools/readme_layout.py --write"
    rooms = {name.rstrip("/").removesuffix(".py") for _, names in tool.ROOMS for name in names}
    for path in PKG.iterdir():  # every room of the package is in the picture
        if not path.name.startswith((".", "_")) or path.name in ("__init__.py", "__main__.py"):
            if path.suffix == ".py" or (path.is_dir() and path.name != "__pycache__"):
                assert path.name.removesuffix(".py") in rooms, f"{path.name} is not in the README's Layout"
    tree = tool.layout()  # (once: it parses every module)
    for path in PKG.rglob("*.py"):
        if path.name != "__init__.py":
            assert str(path.relative_to(REPO)) in tree


def test_ruff_lint_and_format_clean():
    """ruff (pyflakes + pycodestyle errors, pyproject's [tool.ruff]) finds nothing: unused
    imports, undefined names and stale noqa markers fail here, not in review; and every file is
    formatted as `ruff format` writes it."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it is in the dev extra: scripts/setup.sh installs it)")
    r = subprocess.run(
        [ruff, "check", "--output-format", "concise", "."], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout[-3000:]
    # and formatted as `ruff format` writes it (pyproject's [tool.ruff.format]): no style debates
    r = subprocess.run([ruff, "format", "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "run `ruff format .`:\n" + r.stdout[-3000:]
