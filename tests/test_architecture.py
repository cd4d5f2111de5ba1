"""The package's shape: no import cycles, no private names across modules, layers flow down.

An AST walk over kbgit/ and server/. Imports anywhere in a module count, including those
inside functions; for cycles, those under ``if TYPE_CHECKING:`` count too (they tie two
modules just the same), while the layer rule reads only the imports that run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kbgit

ROOT = Path(kbgit.__file__).resolve().parent.parent
PACKAGES = ("kbgit", "server")

#: lowest first; a module may import its own layer or any lower one, never a higher one
LAYERS = [
    {"kbgit.errors", "kbgit.fsio", "kbgit.backends", "kbgit.catfile"},
    {"kbgit.config", "kbgit.gitrepo", "kbgit.embeddings", "kbgit.models", "kbgit.fencing"}
    | {"kbgit.model_export", "kbgit.exported_embedder"},
    {"kbgit.format"},
    {"kbgit.retrieval"},
    {"kbgit.writer", "kbgit.unpushed"},
    {"kbgit.ingest"},
    {"kbgit.store", "kbgit.history"},
    {"kbgit.langchain", "kbgit.serving", "kbgit.hub"},
    {"kbgit.cli", "server", "kbgit", "kbgit.__main__", "kbgit.retriever", "kbgit.hooks"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, typing_too: bool = False) -> list[tuple[str, list[str]]]:
    """Return (imported module, names taken from it) for every import that runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not typing_too:
            return
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if _exists(f"{target}.{n}")]
            out.extend((s, []) for s in submodules)
            taken = [n for n in names if f"{target}.{n}" not in submodules]
            if taken or not submodules:  # `from . import sub` imports only the submodule
                out.append((target, taken))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [(m, n) for m, n in out if m.split(".")[0] in PACKAGES]


def _exists(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _graph(typing_too: bool = False) -> dict[str, list[tuple[str, list[str]]]]:
    return {
        _module_name(p): _imports(p, typing_too)
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
    }


def test_no_import_cycles() -> None:
    # imports made only for type checking count too: they tie the modules just the same
    graph = {m: {t for t, _ in deps if t != m} for m, deps in _graph(typing_too=True).items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            dfs(module)
    assert cycles == []


def test_no_private_name_is_imported_from_another_module() -> None:
    offenders = [
        f"{module} imports {name} from {target}"
        for module, deps in _graph().items()
        for target, names in deps
        for name in names
        if name.startswith("_") and target != module
    ]
    assert offenders == []


def _layer(module: str) -> int:
    matches = [
        (len(prefix), i)
        for i, layer in enumerate(LAYERS)
        for prefix in layer
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} belongs to no layer in LAYERS"
    return max(matches)[1]  # the longest prefix decides


def test_layers_only_import_downward() -> None:
    upward = [
        f"{module} -> {target}"
        for module, deps in _graph().items()
        for target, _names in deps
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_one_module_writes_commit_trailers() -> None:
    writers = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "kbgit").rglob("*.py")
        if "Kbgit-Added" in p.read_text(encoding="utf-8")
    )
    assert writers == ["kbgit/format/trailers.py"]
