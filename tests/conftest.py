"""Shared fixtures: a private BITRAG_HOME per test and a CLI runner."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import cli
from agent.model_file import embedded_model_path


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own BITRAG_HOME and no model/embedder overrides from the shell."""
    monkeypatch.setenv("BITRAG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BITRAG_MODEL", raising=False)
    monkeypatch.delenv("BITRAG_EMBEDDER", raising=False)
    return tmp_path / "home"


@pytest.fixture
def run():
    """Invoke the CLI in-process: run("ask", "...") -> click Result."""

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args))

    return invoke


@pytest.fixture
def run_json(run):
    """Invoke with --json, assert success and return the parsed output."""

    def invoke(*args: str) -> dict:
        result = run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return invoke


@pytest.fixture(scope="session")
def model_path() -> Path:
    return embedded_model_path()
