"""`bitrag models`: listing, registering, and the verification of opt-in packs."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from agent.runtime.packs import QWEN, assemble
from retrieval.errors import UserError


def test_list_shows_the_embedded_model_with_facts_from_its_tensors(run_json, model_path):
    (row,) = run_json("models", "list")["models"]
    assert row["path"] == str(model_path) and row["origin"] == "embedded"
    assert row["quant_type"] == "Q4_1" and row["languages"] == ["en"]
    assert 5.0 < row["bits_per_weight"] < 6.0  # Q4_1 blocks (5.0) plus a few f32/q8 tensors
    assert row["bytes"] == 98_362_432


def test_added_model_is_listed_and_usable_by_name(run_json, tmp_path, model_path):
    mine = tmp_path / "my-notes-model.gguf"
    shutil.copyfile(model_path, mine)
    added = run_json("models", "add", str(mine), "--name", "mine", "--languages", "en")
    assert added["models"][0]["name"] == "mine"
    names = [m["name"] for m in run_json("models", "list")["models"]]
    assert names == ["smollm2-135m-instruct", "mine"]
    assert run_json("doctor", "--model", "mine")["model"]["path"] == str(mine)


def test_adding_a_broken_file_is_refused(run, tmp_path, model_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model_path.read_bytes()[:4096])
    result = run("models", "add", str(cut))
    assert result.exit_code == 1
    assert str(cut) in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unknown_pack_names_the_available_ones(run):
    result = run("models", "install", "llama-70b")
    assert result.exit_code == 1
    assert QWEN.name in result.stderr


def test_pack_parts_are_kept_only_when_the_assembled_hash_matches(tmp_path):
    parts = [tmp_path / f"part{n:02d}.bin" for n in (1, 2)]
    parts[0].write_bytes(b"GGUF" + b"a" * 1000)
    parts[1].write_bytes(b"b" * 777)
    good = hashlib.sha256(parts[0].read_bytes() + parts[1].read_bytes()).hexdigest()
    dest = tmp_path / "models" / "pack.gguf"
    with pytest.raises(UserError, match="refusing to use it"):
        assemble(list(reversed(parts)), good, dest)
    assert list(dest.parent.iterdir()) == []
    assert assemble(parts, good, dest).read_bytes()[:4] == b"GGUF"
    assert [p.name for p in dest.parent.iterdir()] == ["pack.gguf"]


def test_the_pack_is_pinned_by_wheel_and_file_hashes():
    assert len(QWEN.parts) == 6 and QWEN.version == "0.9.0"
    assert all(len(sha) == 64 for _, sha in QWEN.parts)
    assert QWEN.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert Path(QWEN.file).suffix == ".gguf" and "ko" in QWEN.languages


def test_model_names_are_simple_names_and_paths_stay_paths(
    run, run_json, tmp_path, model_path, monkeypatch
):
    (tmp_path / "elsewhere").mkdir()
    mine = tmp_path / "mine.gguf"
    mine.write_bytes(model_path.read_bytes())
    for bad in ("../evil.gguf", "sub/dir", "x.GGUF", "-dash"):
        result = run("models", "add", str(mine), "--name", bad)
        assert result.exit_code == 1, bad
        assert result.stderr.startswith(f"Error: model name '{bad}' is not a simple name")
        assert len(result.stderr.splitlines()) == 1
    run_json("models", "add", str(mine), "--name", "mine")
    assert run_json("doctor", "--model", "mine")["model"]["path"] == str(mine)
    monkeypatch.chdir(tmp_path / "elsewhere")  # a file named like the registered name: a path
    (tmp_path / "elsewhere" / "mine").write_bytes(b"not a model")
    result = run("doctor", "--model", "mine", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["model"]["path"] == "mine"  # ./mine, not the registered one
