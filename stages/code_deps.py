"""The code each DVC stage runs, derived from its import closure, and kept in dvc.yaml's ``deps:``.

A stage's code is its own module plus every module of the project's packages (``pipeline``,
``stages``) that it imports, directly or through other modules, at top level or inside a
function (lazy imports run too). Imports under ``if TYPE_CHECKING:`` never run and are left
out. Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so package
``__init__`` files belong to the closure as well. The CLI dispatcher is not part of any
closure: it loads stage modules by name, lazily.

dvc.yaml lists a stage's code at the granularity of :func:`dep_entry`: the library's group
folders it touches (``pipeline/refine``), the stage glue (``stages/runner``), and top-level
modules by name (``stages/cams.py``). Coarser than the closure, so an edit may rerun a stage
that touches the edited folder without running the edited file; docs/architecture.md lists
which. ``wsss code-deps`` rewrites the ``deps:`` entry of each stage in dvc.yaml and leaves
every other line alone; ``wsss code-deps --check`` only reports a difference (for CI and tests).
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import typer
import yaml

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


def stage_code_files(stage: str, root: Path = ROOT) -> list[str]:
    """Repository-relative paths of the source files stage ``stage`` runs, sorted."""
    files = (module_file(m, root) for m in closure(STAGE_MODULES[stage], root))
    return sorted(str(f.relative_to(root)) for f in files if f is not None)


def dep_entry(path: str) -> str:
    """The dvc.yaml entry that covers a source file: a file inside a group of the library
    (``pipeline/<group>/...``) or of the stage glue (``stages/runner/...``) is covered by its
    group's folder; a top-level module (a stage's own, a package ``__init__``) by itself."""
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else path


def stage_code_deps(stage: str, root: Path = ROOT) -> list[str]:
    """The code deps dvc.yaml declares for ``stage``: the folders and files covering its closure."""
    return sorted({dep_entry(path) for path in stage_code_files(stage, root)})


def is_code_dep(entry: str) -> bool:
    return entry.split("/")[0] in PACKAGES


_STAGE = re.compile(r"^  ([A-Za-z_][\w-]*):\s*$")
_KEY = re.compile(r"^    ([A-Za-z_]+):")
_PLAIN = re.compile(r"^[\w./-]+$")
WIDTH = 120  # a deps line wraps before this column


def _flow_item(entry: str) -> str:
    return entry if _PLAIN.match(entry) else '"' + entry + '"'


def format_deps(data: list[str], code: list[str]) -> list[str]:
    """A ``deps:`` entry as a flow list: the data deps first, the code deps from a new line."""
    head = "    deps: ["
    indent = " " * len(head)
    lines: list[str] = []
    groups = [group for group in (data, code) if group]
    for g, group in enumerate(groups):
        current = head if g == 0 else indent
        for i, entry in enumerate(group):
            item = _flow_item(entry) + ("]" if g == len(groups) - 1 and i == len(group) - 1 else ",")
            if current not in (head, indent) and len(current) + 1 + len(item) > WIDTH:
                lines.append(current)
                current = indent
            current += ("" if current in (head, indent) else " ") + item
        lines.append(current)
    return lines or [head + "]"]


def rewrite_dvc_yaml(text: str, deps: dict[str, list[str]]) -> str:
    """dvc.yaml ``text`` with each listed stage's code deps replaced by ``deps[stage]``.

    The ``deps:`` entry of each stage is written as a flow list (its data deps kept in their
    order, then the code deps); a stage without one gets it after its ``cmd:``. Every other
    line stays as it is.
    """
    parsed = yaml.safe_load(text)["stages"]
    missing = sorted(set(deps) - set(parsed))
    if missing:
        raise ValueError(f"dvc.yaml has no stage {missing[0]!r}; add it before generating its code deps")
    out: list[str] = []
    stage: str | None = None
    replacing = False
    for line in text.splitlines():
        if replacing and line.startswith("      "):
            continue  # a continuation line of the deps entry being replaced
        replacing = False
        if match := _STAGE.match(line):
            stage = match.group(1)
        key = _KEY.match(line)
        if stage in deps and key and key.group(1) == "deps":
            data = [d for d in parsed[stage].get("deps") or [] if not is_code_dep(d)]
            out.extend(format_deps(data, deps[stage]))
            replacing = True
            continue
        out.append(line)
        if stage in deps and key and key.group(1) == "cmd" and "deps" not in parsed[stage]:
            out.extend(format_deps([], deps[stage]))
    return "\n".join(out) + "\n"


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
    from stages.runner.outputs import write_text

    write_text(path, wanted)
    typer.echo("dvc.yaml: code deps rewritten", err=True)
