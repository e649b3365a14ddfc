"""The package's shape: its modules import one another without cycles (imports under
`if TYPE_CHECKING:` included), and each public package's surface is pinned."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import imagetask

PACKAGE = Path(imagetask.__file__).parent

Edge = tuple[str, str]

CYCLES_LEFT_FOR_THE_PACKAGE_MOVE: set[Edge] = {
    # `ImageTask.run` is `runner.run`, and the runner drives tasks.
    ("imagetask.task._task", "imagetask.run._runner"),
    # A batch calls back into the task that made it (a batch is to take the model, `n`
    # and the output schema instead).
    ("imagetask.build._batch", "imagetask.task._task"),
    ("imagetask.build._columnar", "imagetask.task._task"),
}
"""The imports that close the cycles still left: each is on a cycle, and without them
the graph has none."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package (extension stubs aside) and the modules of the package
    it imports anywhere in its source, `if TYPE_CHECKING:` blocks and functions included.
    `from package import name` imports the submodule `name` if there is one, else the
    package; a package's `__init__` that Python runs first is not counted."""
    sources = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    extensions = {module_name(path) for path in PACKAGE.rglob("*.pyi")} - set(sources)

    def ours(name: str) -> str | None:
        while name and name not in sources and name not in extensions:
            name = name.rpartition(".")[0]
        return name if name in sources else None

    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(ours(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                imported.update(ours(f"{base}.{alias.name}") for alias in node.names)
        graph[name] = {module for module in imported if module is not None and module != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


def cycle_through(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as its modules in import order (first repeated last), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            found = visit(imported)
            if found:
                return found
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module)
        if found:
            return found
    return None


def test_the_import_graph_sees_type_checking_imports() -> None:
    graph = import_graph()
    assert "imagetask.outcome" in graph["imagetask.errors"]  # under `if TYPE_CHECKING:`
    assert (
        "imagetask.run._runner" in graph["imagetask.task._task"]
    )  # `from imagetask.run import _runner as runner`
    assert "imagetask" not in graph["imagetask.build._artifacts"]  # `from imagetask import _core`
    assert graph["imagetask.outcome"] == set()


def test_no_import_cycle_but_the_listed_ones() -> None:
    graph = import_graph()
    for importer, imported in sorted(CYCLES_LEFT_FOR_THE_PACKAGE_MOVE):
        assert imported in graph[importer], f"{importer} no longer imports {imported}"
        assert importer in reachable(graph, imported), f"{importer} -> {imported}: no cycle"
    broken = {
        module: imported - {b for a, b in CYCLES_LEFT_FOR_THE_PACKAGE_MOVE if a == module}
        for module, imported in graph.items()
    }
    assert cycle_through(broken) is None, " -> ".join(cycle_through(broken) or [])


SURFACES = {
    "imagetask": [
        "AsyncImageGenerationModel",
        "ConfigError",
        "ImageGeneration",
        "ImageGenerationModel",
        "ImageModel",
        "ImageTask",
        "ImageTaskError",
        "InputRowError",
        "MissingExtraError",
        "ReadError",
        "Reader",
        "RequestError",
        "RequestRefused",
        "RunError",
        "RunInterrupted",
        "RunStopped",
        "RunSummary",
        "RuntimeParameter",
        "Secret",
        "SinkError",
        "Url",
    ],
    "imagetask.models": [
        "Answer",
        "AsyncImageEditingModel",
        "AsyncImageGenerationModel",
        "EditInput",
        "ImageEditingModel",
        "ImageGenerationModel",
        "ImageModel",
        "InferenceEndpointsImageGeneration",
        "OpenAIBatchImageGeneration",
        "OpenAIImageGeneration",
        "PlaceholderImageGeneration",
        "RequestError",
        "SourceImage",
    ],
    "imagetask.errors": [
        "ConfigError",
        "ImageTaskError",
        "InputRowError",
        "MissingExtraError",
        "ReadError",
        "RequestError",
        "RequestRefused",
        "RunError",
        "RunInterrupted",
        "RunStopped",
        "SinkError",
        "UsageError",
    ],
    "imagetask.readers": ["FORMATS", "Reader"],
    "imagetask.task": [
        "IMAGE_FORMATS",
        "ImageGeneration",
        "ImageTask",
        "Row",
        "TemplateGeneration",
    ],
    "imagetask.io": ["FORMATS", "Reader", "RunFolder"],
    "imagetask.run": ["run"],
    "imagetask.gallery": ["build_gallery"],
    "imagetask.models.openai_batch": [
        "JOBS_DIR",
        "MAX_INPUT_BYTES",
        "MAX_REQUESTS_PER_JOB",
        "OpenAIBatchImageGeneration",
    ],
    "imagetask.integrations": [],
    "imagetask.integrations.datasets": ["fingerprint", "generate", "output_features"],
    "imagetask.integrations.ray": ["TaskActor", "generate"],
    "imagetask.testing": [
        "INVARIANTS",
        "Call",
        "Invariant",
        "ReplayModel",
        "ScriptedAnswers",
        "ScriptedModel",
        "check_task",
    ],
    "imagetask.columnar": [
        "MAX_STRING_BYTES",
        "ArrowBatch",
        "ArrowOutput",
        "as_table",
        "dict_rows",
    ],
}


@pytest.mark.parametrize("name", sorted(SURFACES))
def test_public_surface(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ == SURFACES[name]
    assert [attribute for attribute in module.__all__ if not hasattr(module, attribute)] == []


def test_core_is_internal_but_importable() -> None:
    assert "_core" not in imagetask.__all__
    assert importlib.import_module("imagetask._core") is imagetask._core


PUBLIC_MODULES = {
    *SURFACES,
    "imagetask.cli",
    "imagetask.config",
    "imagetask.outcome",
    "imagetask.testing.check",
    "imagetask.testing.models",
    "imagetask.testing.strategies",
}
"""The modules a user imports; every other one is private (a `_` name on its path) but
the package `imagetask.build`, whose modules are all private."""


def test_internal_modules_are_private() -> None:
    public = {
        name for name in import_graph() if not any(part.startswith("_") for part in name.split("."))
    }
    assert public == PUBLIC_MODULES | {"imagetask.build"}
