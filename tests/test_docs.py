"""The README and docs/ name only things that exist: repository paths, and `wsss` subcommands."""
import re
from pathlib import Path

import typer.main

from stages.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Repository paths only: outputs under data/, metrics/, plots/ and report/ appear once a run made them.
PATH = re.compile(r"(?<![\w./-])((?:pipeline|stages|benchmarks|configs|scripts|docs|tests|\.ci)/[\w./-]*[\w])")
COMMAND = re.compile(r"(?<![\w-])wsss ([a-z][a-z_-]*)")


def _mentions(pattern: re.Pattern) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for doc in DOCS:
        for match in pattern.finditer(doc.read_text()):
            found.setdefault(match.group(1), set()).add(doc.name)
    return found


def test_every_repository_path_in_the_docs_exists():
    mentioned = _mentions(PATH)
    assert len(mentioned) > 30  # the pattern does find the docs' paths
    missing = {path: docs for path, docs in mentioned.items() if not (ROOT / path).exists()}
    assert not missing, f"paths named in the docs that do not exist: {missing}"


def test_every_wsss_command_in_the_docs_is_registered():
    registered = set(typer.main.get_command(app).commands)
    mentioned = _mentions(COMMAND)
    assert {"check", "summary", "cams"} <= set(mentioned)
    unknown = {name: docs for name, docs in mentioned.items() if name not in registered}
    assert not unknown, f"`wsss` subcommands named in the docs that do not exist: {unknown}"
