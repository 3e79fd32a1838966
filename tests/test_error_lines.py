"""Bad names, damaged index files, a file for BITRAG_HOME, read-only folders, odd GGUFs and a busy
port: each is one `Error: ...` line on stderr naming the culprit and the repair, and nothing
indexed is lost. `doctor` finds the same faults instead of saying "all good"."""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.store import ingest

HNSW = "# Graphs\n\nHNSW graphs answer approximate nearest neighbour queries.\n"
LORA = "# Adapters\n\nLoRA trains two small low-rank matrices per layer.\n"
QLORA = "# Adapters\n\nQLoRA quantizes the frozen base model to NF4.\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """notes/ (a.md, b.md) and index/ with two generations: gen-000001 (a.md), gen-000002 (both)."""
    root = tmp_path_factory.mktemp("built")
    notes = root / "notes"
    notes.mkdir()
    (notes / "a.md").write_text(HNSW)
    ingest([notes], root / "index")
    (notes / "b.md").write_text(LORA)
    ingest([notes], root / "index")
    return root


@pytest.fixture
def notes(built: Path) -> Iterator[Path]:
    """The indexed notes, in place (documents are known by path); put back after the test."""
    notes = built / "notes"
    yield notes
    shutil.rmtree(notes)
    notes.mkdir()
    (notes / "a.md").write_text(HNSW)
    (notes / "b.md").write_text(LORA)


@pytest.fixture
def index(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built / "index", tmp_path / "index"))


def _one_line(result, *phrases: str) -> str:
    """A non-zero exit with exactly one `Error:` line on stderr, holding every phrase."""
    assert result.exit_code != 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output and "--debug" not in lines[0], lines[0]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def _sources(run, index: Path, query: str = "HNSW graphs") -> list[str]:
    result = run("search", query, "--retriever", "bm25", "--index", str(index), "--json")
    assert result.exit_code == 0, result.output
    return [Path(hit["source"]).name for hit in json.loads(result.stdout)["results"]]


def _problems(run, *args: str) -> list[str]:
    """doctor --json must fail, and say what is wrong (not "all good")."""
    result = run("doctor", "--json", *args)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    return [f"{p['what']} -> {p['fix']}" for p in report["problems"]]


def test_a_file_name_that_is_not_utf8_is_skipped_and_named(run, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "good.md").write_text(HNSW)
    (notes / os.fsdecode(b"caf\xe9.md")).write_text(LORA)
    result = run("ingest", str(notes), "--index", str(tmp_path / "index"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("added 1, updated 0, unchanged 0, removed 0, chunks 1")
    shown = f"{notes}/caf\\xe9.md"
    reason = "file name is not valid UTF-8: rename the file"
    assert result.stderr.splitlines() == [f"skipped {shown}: {reason}"]
    assert _sources(run, tmp_path / "index") == ["good.md"]


def test_stray_generation_folders_are_left_alone(run, index, notes):
    (index / "gen-abc").mkdir()
    (index / "gen-\u00b2").mkdir()  # "²".isdigit() is True, int("²") fails
    (notes / "c.md").write_text(QLORA)
    result = run("ingest", str(notes), "--index", str(index), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 1
    assert (index / "CURRENT").read_text() == "gen-000003"
    assert (index / "gen-abc").is_dir() and (index / "gen-\u00b2").is_dir()
    assert _sources(run, index, "QLoRA NF4") == ["c.md"]


def test_a_current_file_of_random_bytes_is_corrupt_and_names_the_intact_generation(
    run, index, notes
):
    (index / "CURRENT").write_bytes(b"\x8f\x00\xfe\nZ\x13" * 8)
    advice = f"its generation gen-000002 is intact: write `gen-000002` into {index / 'CURRENT'}"
    for args in (
        ("search", "HNSW graphs", "--index", str(index)),
        ("ask", "what do HNSW graphs answer?", "--index", str(index)),
        ("ingest", str(notes), "--index", str(index)),
    ):
        _one_line(run(*args), f"index at {index} is corrupt (CURRENT holds b'", advice)
    assert any("CURRENT holds" in p for p in _problems(run, "--index", str(index)))
    (index / "CURRENT").write_text("gen-000002")  # the advice works: nothing was lost
    assert _sources(run, index) == ["a.md"]


def test_a_truncated_bm25_file_is_corrupt_and_the_previous_generation_stays(run, index):
    bm25 = index / "gen-000002" / "bm25.npz"
    bm25.write_bytes(bm25.read_bytes()[: bm25.stat().st_size // 2])
    line = _one_line(
        run("search", "HNSW graphs", "--retriever", "bm25", "--index", str(index)),
        f"index at {index} is corrupt (bm25.npz: ",
        "its generation gen-000001 is intact",
    )
    assert "BadZipFile" not in line
    assert any("bm25.npz" in p for p in _problems(run, "--index", str(index)))
    (index / "CURRENT").write_text("gen-000001")
    assert _sources(run, index) == ["a.md"]


@pytest.mark.parametrize("cut", ["mid-line", "last line"])
def test_a_truncated_terms_file_is_corrupt_and_ingest_keeps_the_index(run, index, notes, cut):
    terms = index / "gen-000002" / "terms.jsonl"
    data = terms.read_bytes()
    terms.write_bytes(data[: len(data) - 3] if cut == "mid-line" else data.splitlines(True)[0])
    assert any("terms.jsonl" in p for p in _problems(run, "--index", str(index)))
    (notes / "b.md").write_text(QLORA)
    _one_line(
        run("ingest", str(notes), "--index", str(index)),
        f"index at {index} is corrupt (terms.jsonl: ",
        "its generation gen-000001 is intact",
    )
    assert (index / "CURRENT").read_text() == "gen-000002"
    assert _sources(run, index, "LoRA matrices") == ["b.md"]


def test_bitrag_home_that_is_a_file(run, tmp_path, monkeypatch, notes):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("BITRAG_HOME", str(home))
    said = f"BITRAG_HOME {home} is a file, not a folder; point BITRAG_HOME at a folder"
    for args in (("search", "HNSW"), ("ingest", str(notes)), ("models", "list")):
        _one_line(run(*args), said)
    assert any(said in p for p in _problems(run))
    monkeypatch.setenv("BITRAG_HOME", str(home / "sub"))
    _one_line(run("search", "HNSW"), f"cannot be created: {home} is a file")


def _unprivileged(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a process for which file modes hold, root included."""
    cmd = [sys.executable, "-m", "agent", *args]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _chmod_tree(root: Path, folders: int, files: int) -> None:
    for folder, _, names in os.walk(root):
        Path(folder).chmod(folders)
        for name in names:
            (Path(folder) / name).chmod(files)


def test_a_read_only_index_answers_searches_and_refuses_ingest_in_one_line(index, notes):
    (notes / "c.md").write_text(QLORA)
    _chmod_tree(index, 0o555, 0o444)
    try:
        found = _unprivileged("search", "LoRA matrices", "--index", str(index), "--json")
        assert found.returncode == 0, found.stderr
        assert Path(json.loads(found.stdout)["results"][0]["source"]).name == "b.md"
        refused = _unprivileged("ingest", str(notes), "--index", str(index))
    finally:
        _chmod_tree(index, 0o755, 0o644)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"Error: the index folder {index} is read-only (Permission denied): make it writable "
        "to ingest into it, or pass --index with a writable folder"
    ]
    assert (index / "CURRENT").read_text() == "gen-000002"


def _gguf(path: Path, metadata: bytes, n_kv: int) -> Path:
    """A GGUF v3 file with no tensors: header, the given key-value bytes, padding to 32."""
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv) + metadata
    path.write_bytes(header + b"\0" * (-len(header) % 32))
    return path


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


def _architecture(name: str) -> bytes:
    return _key("general.architecture") + struct.pack("<I", 8) + _key(name)


def test_metadata_arrays_nested_thousands_deep_are_named_in_one_line(run, tmp_path, index):
    nested = struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 5000 + struct.pack("<IQ", 4, 0)
    deep = _gguf(tmp_path / "deep.gguf", _key("deep") + nested + _architecture("llama"), 2)
    line = _one_line(
        run("ask", "what do HNSW graphs answer?", "--model", str(deep), "--index", str(index)),
        f"corrupt GGUF file: {deep}",
        "metadata arrays nested more than 8 deep",
    )
    assert "Recursion" not in line
    assert any(str(deep) in p and "nested" in p for p in _problems(run, "--model", str(deep)))


def test_doctor_loads_the_model_as_ask_would(run, tmp_path, index):
    unloadable = _gguf(tmp_path / "empty-llama.gguf", _architecture("llama"), 1)
    assert run("models", "add", str(unloadable), "--json").exit_code == 0  # the header is fine
    said = (
        f"llama.cpp cannot load the model file {unloadable} (damaged, or an architecture it "
        "does not know): pass --model PATH to another GGUF"
    )
    assert _problems(run, "--model", str(unloadable)) == [
        f"{said} -> pass --model PATH to a complete GGUF file"
    ]
    chat = ("ask", "hello, how are you?", "--model", str(unloadable), "--index", str(index))
    assert _one_line(run(*chat), said) == f"Error: {said}"


def test_a_registered_model_whose_bytes_changed_is_found_by_doctor_and_refused(
    run, tmp_path, model_path, index
):
    mine = tmp_path / "mine.gguf"
    shutil.copyfile(model_path, mine)
    assert run("models", "add", str(mine), "--name", "mine", "--json").exit_code == 0
    with mine.open("r+b") as f:  # one byte inside the tensor data
        f.seek(60_000_000)
        byte = f.read(1)
        f.seek(60_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    fix = f"restore it, or run `bitrag models add {mine} --name mine` to accept the new bytes"
    assert _problems(run) == [
        f"registered model mine changed since `bitrag models add`: {mine} -> {fix}"
    ]
    _one_line(
        run("ask", "what do HNSW graphs answer?", "--model", "mine", "--index", str(index)),
        f"model file {mine} changed since `bitrag models add`; {fix}",
    )


def test_serve_llm_on_a_busy_port_is_one_line_before_loading(home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "agent", "serve-llm", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ | {"BITRAG_HOME": str(home)},
        )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: port {port} on 127.0.0.1 is already in use: stop what listens there, "
        "or pass --port with a free port"
    ]
