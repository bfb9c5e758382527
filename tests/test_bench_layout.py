"""bench/ is thin scripts on shared modules: no script imports another."""

import ast
import os

BENCH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench")
# The layer every benchmark builds on (bench/runs.py and its helpers).
SHARED = {"curves", "machine", "resemblyzer_encoder", "runs", "scores", "stats"}


def modules():
    """bench module name -> its parsed source."""
    return {
        name[:-3]: ast.parse(open(os.path.join(BENCH, name)).read())
        for name in sorted(os.listdir(BENCH))
        if name.endswith(".py") and name != "__init__.py"
    }


def bench_imports(tree):
    """The bench modules a module imports."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "bench":
                names = [f"bench.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("bench.")}
    return found


def test_no_benchmark_imports_another_benchmark():
    trees = modules()
    scripts = {
        name
        for name, tree in trees.items()
        if any(
            isinstance(node, ast.FunctionDef) and node.name == "main"
            for node in tree.body
        )
    }
    assert scripts.isdisjoint(SHARED) and set(trees) == scripts | SHARED
    for name, tree in trees.items():
        assert bench_imports(tree) <= SHARED, (name, bench_imports(tree))
