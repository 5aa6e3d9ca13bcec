"""The code each DVC stage runs, derived from its import closure, and kept in dvc.yaml's ``deps:``.

A stage's code is its own module plus every module of the project's packages (``pipeline``,
``stages``) that it imports, directly or through other modules, at top level or inside a
function (lazy imports run too). Imports under ``if TYPE_CHECKING:`` never run and are left
out. Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so package
``__init__`` files belong to the closure as well. The CLI dispatcher is not part of any
closure: it loads stage modules by name, lazily.

``wsss code-deps`` rewrites the code entries of each stage's ``deps:`` in dvc.yaml and leaves
every other line alone; ``wsss code-deps --check`` only reports a difference (for CI and tests).
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import typer

from stages.stage_list import STAGE_MODULES

PACKAGES = ("pipeline", "stages")
ROOT = Path(__file__).resolve().parents[1]


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The source file of a project module (``a.b`` -> a/b.py or a/b/__init__.py), None if not one."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: all of them, except the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children = node.orelse
        stack.extend(children)


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(module: str, root: Path = ROOT) -> set[str]:
    """Project modules that running ``module`` imports directly (parents of each included)."""
    path = module_file(module, root)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b` imports module a.b when b is a submodule, else a name of a.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}", root)]
        for name in names:
            found.update(m for m in _with_parents(name) if module_file(m, root))
    found.discard(module)
    return found


def closure(module: str, root: Path = ROOT) -> set[str]:
    """``module`` and every project module it imports, transitively."""
    seen: set[str] = set()
    todo = [*_with_parents(module)]
    while todo:
        current = todo.pop()
        if current in seen or module_file(current, root) is None:
            continue
        seen.add(current)
        todo.extend(imported_modules(current, root))
    return seen


def stage_code_deps(stage: str, root: Path = ROOT) -> list[str]:
    """Repository-relative paths of the source files stage ``stage`` runs, sorted."""
    files = (module_file(m, root) for m in closure(STAGE_MODULES[stage], root))
    return sorted(str(f.relative_to(root)) for f in files if f is not None)


def _is_code_dep(entry: str) -> bool:
    return entry.endswith(".py") and entry.split("/")[0] in PACKAGES


_STAGE = re.compile(r"^  ([A-Za-z_][\w-]*):\s*$")
_KEY = re.compile(r"^    ([A-Za-z_]+):")
_ITEM = re.compile(r"^      - (\S+)\s*$")


def rewrite_dvc_yaml(text: str, deps: dict[str, list[str]]) -> str:
    """dvc.yaml ``text`` with each listed stage's code deps replaced by ``deps[stage]``.

    Data deps keep their order and come first; a stage with no ``deps:`` key gets one after
    its ``cmd:``. Only lines of the form ``      - pipeline/...py`` / ``stages/...py`` change.
    """
    lines = text.splitlines()
    with_deps = _stages_with_deps(lines)
    out: list[str] = []
    stage: str | None = None
    in_deps = False
    done: set[str] = set()

    def emit_code() -> None:
        if stage in deps and stage not in done:
            out.extend(f"      - {path}" for path in deps[stage])
            done.add(stage)

    for line in lines:
        stage_match = _STAGE.match(line)
        key_match = _KEY.match(line)
        if in_deps and not _ITEM.match(line):
            emit_code()
            in_deps = False
        if stage_match:
            stage = stage_match.group(1)
        elif key_match and stage in deps:
            if key_match.group(1) == "deps":
                in_deps = True
            elif key_match.group(1) == "cmd" and stage not in with_deps:
                out.append(line)
                out.append("    deps:")
                emit_code()
                continue
        item = _ITEM.match(line)
        if in_deps and item and _is_code_dep(item.group(1)):
            continue
        out.append(line)
    if in_deps:
        emit_code()
    missing = sorted(set(deps) - done)
    if missing:
        raise ValueError(f"dvc.yaml has no stage {missing[0]!r}; add it before generating its code deps")
    return "\n".join(out) + "\n"


def _stages_with_deps(lines: list[str]) -> set[str]:
    found: set[str] = set()
    stage = None
    for line in lines:
        if match := _STAGE.match(line):
            stage = match.group(1)
        elif stage and line.startswith("    deps:"):
            found.add(stage)
    return found


def derived_deps(root: Path = ROOT) -> dict[str, list[str]]:
    return {stage: stage_code_deps(stage, root) for stage in STAGE_MODULES}


def main(check: bool = typer.Option(False, "--check", help="Only compare; exit 1 if dvc.yaml's code deps are out of date.")) -> None:
    """Write each stage's code deps (its import closure) into dvc.yaml."""
    path = ROOT / "dvc.yaml"
    current = path.read_text()
    wanted = rewrite_dvc_yaml(current, derived_deps())
    if wanted == current:
        typer.echo("dvc.yaml: code deps up to date", err=True)
        return
    if check:
        typer.echo("dvc.yaml: code deps are out of date; run `wsss code-deps` and commit dvc.yaml", err=True)
        raise typer.Exit(code=1)
    from stages.common import write_text

    write_text(path, wanted)
    typer.echo("dvc.yaml: code deps rewritten", err=True)
