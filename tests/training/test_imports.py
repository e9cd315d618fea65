"""training/ is a DAG: no module imports, at any depth of its body, one that imports it back."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

TRAINING = Path(__file__).parents[2] / "training"


def imports_of(path: Path) -> set[str]:
    """The training modules a file imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "training":
            found |= {f"training.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("training."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("training.")}
    return found


def graph() -> dict[str, set[str]]:
    modules = {f"training.{path.stem}": path for path in TRAINING.glob("*.py") if path.stem != "__init__"}
    return {name: imports_of(path) & set(modules) for name, path in modules.items()}


def test_training_modules_form_a_dag() -> None:
    edges = graph()
    try:
        order = list(TopologicalSorter(edges).static_order())
    except CycleError as exc:
        raise AssertionError(f"training/ imports in a cycle: {' -> '.join(exc.args[1])}") from None
    assert set(order) == set(edges)


def test_tasks_are_the_leaf_and_the_recipe_sits_on_top() -> None:
    edges = graph()
    assert edges["training.tasks"] == set()
    assert {"training.tasks", "training.evaluate", "training.stop", "training.train"} <= edges["training.toy"]
    assert not any("training.toy" in imported for imported in edges.values())


def test_the_check_sees_imports_hidden_in_functions(tmp_path: Path) -> None:
    hidden = tmp_path / "m.py"
    hidden.write_text("def f():\n    from training.toy import run_recipe\n    from training import evaluate\n")
    assert imports_of(hidden) == {"training.toy", "training.evaluate"}
