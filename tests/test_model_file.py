"""Bad model files are named in one line on stderr, with a non-zero exit and no traceback."""

from pathlib import Path

import pytest


def _assert_one_line_error(result, path: Path, phrase: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert phrase in lines[0]
    assert "Traceback" not in result.output + result.stderr


def test_missing_model_is_named(run, tmp_path):
    missing = tmp_path / "nope.gguf"
    result = run("ask", "what is bfloat16?", "--model", str(missing))
    _assert_one_line_error(result, missing, "not found")


def test_non_gguf_model_is_named(run, tmp_path):
    fake = tmp_path / "notes.gguf"
    fake.write_text("just some text, not a model")
    result = run("ask", "what is bfloat16?", "--model", str(fake))
    _assert_one_line_error(result, fake, "not a GGUF")


@pytest.mark.parametrize("keep", [4, 4096, 50_000_000])
def test_truncated_model_is_named(run, tmp_path, model_path, keep):
    cut = tmp_path / "cut.gguf"
    with model_path.open("rb") as f:
        cut.write_bytes(f.read(keep))
    result = run("ask", "what is bfloat16?", "--model", str(cut))
    _assert_one_line_error(result, cut, "truncated")


def test_model_from_environment(run, tmp_path, monkeypatch):
    missing = tmp_path / "from-env.gguf"
    monkeypatch.setenv("BITRAG_MODEL", str(missing))
    result = run("ask", "what is bfloat16?")
    _assert_one_line_error(result, missing, "not found")
