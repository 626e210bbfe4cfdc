"""The house rules of the code, checked from the source: imports point one way (no module imports
a module that imports it back, through any chain), ``stacking/`` knows nothing of the product,
the product never imports the benchmark or the tests, and no product file grows past 400 lines.

Every import counts, the ones inside functions too: a lazy import still ties two modules together."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("catalog_classifier", "stacking")
MAX_LINES = 400


def module_files(top: str) -> dict[str, Path]:
    out = {}
    for f in sorted((ROOT / top).rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def imported_names(name: str, path: Path) -> set[str]:
    """Absolute dotted names ``name``'s source imports (``from a import b`` gives ``a`` and ``a.b``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of ``modules`` it imports (each name resolved to its longest known module)."""
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target in imported_names(name, path):
            parts = target.split(".")
            for n in range(len(parts), 0, -1):
                cand = ".".join(parts[:n])
                if cand in modules:
                    deps.add(cand)
                    break
        deps.discard(name)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (iterative DFS, white/grey/black)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def product_modules() -> dict[str, Path]:
    mods = {}
    for top in PRODUCT:
        mods.update(module_files(top))
    return mods


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_relative_and_function_level_imports_are_resolved():
    graph = import_graph(product_modules())
    job = graph["catalog_classifier.nightly.batch.job"]
    assert {"catalog_classifier.events", "catalog_classifier.nightly.batch.engines",
            "catalog_classifier.nightly.review.builder"} <= job
    # imported inside a function only
    assert "catalog_classifier.nightly.batch.engines.ray" in graph["catalog_classifier.nightly.batch.engines"]


def test_no_import_cycle_in_the_product():
    cycle = find_cycle(import_graph(product_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_stacking_imports_nothing_from_the_product():
    for name, path in module_files("stacking").items():
        bad = sorted(t for t in imported_names(name, path) if t.split(".")[0] == "catalog_classifier")
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_product_never_imports_the_benchmark_or_the_tests():
    for name, path in product_modules().items():
        bad = sorted(t for t in imported_names(name, path) if t.split(".")[0] in ("bench", "tests", "conftest"))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_no_product_source_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in product_modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these by role: {long}"
