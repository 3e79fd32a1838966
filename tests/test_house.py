"""The house rules: every command's help is what it was, imports point one way, no module is
too big to read. A change to a command's options shows up here as a diff of its help text."""

import ast
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agent.cli import cli

ROOT = Path(__file__).resolve().parent.parent
HELP_SNAPSHOT = Path(__file__).parent / "snapshots" / "cli_help.txt"
PACKAGES = ("agent", "retrieval", "eval", "mcp_servers")
MAX_LINES = 400


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `group`, the group itself first, sorted by name."""
    found = [path]
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def help_texts() -> str:
    """The --help of `bitrag` and of every subcommand, at a fixed terminal width."""
    parts = []
    for path in _commands(cli):
        result = CliRunner().invoke(cli, [*path, "--help"], prog_name="bitrag", terminal_width=100)
        assert result.exit_code == 0, result.output
        parts.append(f"==== bitrag {' '.join(path)}\n{result.output}")
    return "".join(parts)


def test_every_help_text_is_unchanged() -> None:
    if os.environ.get("BITRAG_UPDATE_SNAPSHOTS"):
        HELP_SNAPSHOT.write_text(help_texts(), encoding="utf-8")
    assert help_texts() == HELP_SNAPSHOT.read_text(encoding="utf-8"), (
        "a command's help changed; if on purpose, rerun with BITRAG_UPDATE_SNAPSHOTS=1"
    )


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    """Every module name `path` imports, at any depth of the file (lazy imports count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _offenders(package: str, forbidden: set[str], exact: set[str] = frozenset()) -> list[str]:
    """Imports in `package` of a forbidden module or anything under it, or of an `exact` name."""
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules(package)
        for name in sorted(_imported(path))
        if name in exact or any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def test_retrieval_imports_no_other_package() -> None:
    assert _offenders("retrieval", {"agent", "eval", "mcp_servers", "tests"}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_nothing_imports_tests(package: str) -> None:
    assert _offenders(package, {"tests"}) == []


def test_the_runtime_does_not_import_the_graph() -> None:
    graph_side = {f"agent.{p.stem}" for p in (ROOT / "agent").glob("*.py")} | {"agent.cli"}
    assert _offenders("agent/runtime", graph_side, exact={"agent"}) == []


def test_the_eval_harness_does_not_import_its_benchmarks() -> None:
    harness = [p for p in _modules("eval") if "bench" not in p.relative_to(ROOT / "eval").parts]
    assert [
        f"{p.relative_to(ROOT)} imports {name}"
        for p in harness
        for name in sorted(_imported(p))
        if name == "eval.bench" or name.startswith("eval.bench.")
    ] == []


@pytest.mark.parametrize("package", [*PACKAGES, "tests"])
def test_no_module_is_over_the_line_limit(package: str) -> None:
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in _modules(package)
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert long == []
