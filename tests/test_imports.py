"""The package's shape: its modules import one another without cycles (imports under
`if TYPE_CHECKING:` included), and each public package's surface is pinned."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import imagetask

PACKAGE = Path(imagetask.__file__).parent

LAYERS = [
    {"imagetask.outcome"},
    {"imagetask.errors"},
    {"imagetask.config", "imagetask._extras", "imagetask._runtime", "imagetask._durable"},
    {"imagetask.models"},
    {"imagetask.build"},
    {"imagetask.io"},
    {"imagetask.run"},
    {"imagetask.task"},
    {
        "imagetask.gallery",
        "imagetask.curate",
        "imagetask.testing",
        "imagetask.integrations",
        "imagetask.readers",
        "imagetask.columnar",
    },
    {"imagetask._bench", "imagetask"},
    {"imagetask.cli"},
    {"imagetask.__main__"},
]
"""The packages (and top-level modules) bottom to top: each imports only those of the
layers below its own."""


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


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert cycle_through(graph) is None, " -> ".join(cycle_through(graph) or [])


def package_of(module: str) -> str:
    """The package of `imagetask` a module belongs to (`imagetask.models.openai_batch`
    counted inside `imagetask.models`), or the top-level module itself."""
    return ".".join(module.split(".")[:2])


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        package = package_of(module)
        graph.setdefault(package, set()).update(
            package_of(name) for name in imported if package_of(name) != package
        )
    return graph


def test_package_graph() -> None:
    graph = package_graph()
    assert graph["imagetask.models"] == {
        "imagetask._extras",
        "imagetask._runtime",
        "imagetask._durable",
        "imagetask.config",
        "imagetask.errors",
    }  # `models.openai_batch` is inside `models`, and reads nothing of `io`
    assert "imagetask.task" in graph["imagetask.cli"]


def test_no_package_import_cycle() -> None:
    graph = package_graph()
    assert cycle_through(graph) is None, " -> ".join(cycle_through(graph) or [])


def test_each_package_imports_only_the_layers_below_it() -> None:
    layer = {package: number for number, packages in enumerate(LAYERS) for package in packages}
    graph = package_graph()
    assert set(graph) == set(layer)
    upward = sorted(
        f"{package} -> {imported}"
        for package, imported_packages in graph.items()
        for imported in imported_packages
        if layer[imported] >= layer[package]
    )
    assert upward == []


SURFACES = {
    "imagetask": [
        "AsyncImageGenerationModel",
        "ConfigError",
        "ImageEditing",
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
        "ImageFile",
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
        "BudgetReached",
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
        "ImageEditing",
        "ImageGeneration",
        "ImageTask",
        "Row",
        "TemplateGeneration",
    ],
    "imagetask.io": ["FORMATS", "Reader", "RunFolder"],
    "imagetask.run": ["run"],
    "imagetask.gallery": ["build_gallery"],
    "imagetask.curate": [
        "Mark",
        "Marks",
        "PublishFile",
        "Published",
        "Selection",
        "Where",
        "dataset_files",
        "publish",
        "read_marks",
        "select",
        "write_marks",
    ],
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
