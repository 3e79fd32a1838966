"""Ingest never loses data: unreadable files keep their chunks, readers keep their generation,
and the same file reached by another path is one document."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.errors import UserError
from retrieval.store import Index, generations

HNSW = "# Graphs\n\nHNSW graphs answer approximate nearest neighbour queries.\n"
LORA = "# Adapters\n\nLoRA trains two small low-rank matrices per layer.\n"
QLORA = "# Adapters\n\nQLoRA quantizes the frozen base model to NF4.\n"


def _notes(tmp_path: Path, files: dict[str, str]) -> Path:
    notes = tmp_path / "notes"
    notes.mkdir()
    for name, text in files.items():
        (notes / name).write_text(text)
    return notes


def _counts(report: dict) -> tuple[int, int, int, int]:
    return report["added"], report["updated"], report["unchanged"], report["removed"]


def _sources(run_json, query: str, index: Path) -> list[str]:
    hits = run_json("search", query, "--retriever", "bm25", "--index", str(index))["results"]
    return [Path(h["source"]).name for h in hits]


def _ingest_as_unprivileged(notes: Path, index: Path) -> dict:
    """Ingest through the CLI in a process for which chmod 000 means unreadable, root included."""
    cmd = [sys.executable, "-m", "agent", "ingest", str(notes), "--index", str(index), "--json"]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_file_without_read_permission_keeps_its_chunks(tmp_path, run_json):
    notes, index = _notes(tmp_path, {"a.md": HNSW, "b.md": LORA}), tmp_path / "idx"
    run_json("ingest", str(notes), "--index", str(index))
    (notes / "a.md").chmod(0)
    (notes / "b.md").write_text(QLORA)
    report = _ingest_as_unprivileged(notes, index)
    assert _counts(report) == (0, 1, 0, 0)
    reason = "kept (unreadable now: Permission denied)"
    assert report["skipped"] == [{"path": str(notes / "a.md"), "reason": reason}]
    assert _sources(run_json, "HNSW graphs", index) == ["a.md"]
    (notes / "a.md").chmod(0o644)
    assert _counts(run_json("ingest", str(notes), "--index", str(index))) == (0, 0, 2, 0)


def test_file_emptied_mid_rewrite_keeps_its_chunks_until_it_is_gone(tmp_path, run_json):
    notes, index = _notes(tmp_path, {"a.md": HNSW, "b.md": LORA}), tmp_path / "idx"
    first = run_json("ingest", str(notes), "--index", str(index))
    (notes / "a.md").write_bytes(b"")
    (notes / "b.md").write_text(QLORA)
    second = run_json("ingest", str(notes), "--index", str(index))
    assert _counts(second) == (0, 1, 0, 0)
    reason = "kept (unreadable now: empty)"
    assert second["skipped"] == [{"path": str(notes / "a.md"), "reason": reason}]
    assert second["chunks"] == first["chunks"]
    assert _sources(run_json, "HNSW graphs", index) == ["a.md"]
    (notes / "a.md").unlink()
    assert _counts(run_json("ingest", str(notes), "--index", str(index))) == (0, 0, 1, 1)
    assert _sources(run_json, "HNSW graphs", index) == []


def _numbered_generations(index: Path) -> list[str]:
    return sorted(p.name for p in index.glob("gen-*") if p.name[4:].isdigit())


def test_loaded_index_survives_the_next_ingest(tmp_path, run_json, monkeypatch):
    notes, index = _notes(tmp_path, {"a.md": HNSW, "b.md": LORA}), tmp_path / "idx"
    run_json("ingest", str(notes), "--index", str(index))
    loaded = Index.load(index)
    (notes / "b.md").write_text(QLORA)
    assert run_json("ingest", str(notes), "--index", str(index))["updated"] == 1
    assert [Path(h.chunk.source).name for h in loaded.search("LoRA matrices", 2, "bm25")] == [
        "b.md"
    ]
    assert loaded.search("approximate nearest neighbour", 1, "hybrid")[0].chunk.text in HNSW
    (notes / "b.md").write_text(LORA)
    assert run_json("ingest", str(notes), "--index", str(index))["updated"] == 1
    assert _numbered_generations(index) == ["gen-000002", "gen-000003"]
    assert sorted(p.name for p in index.glob("gen-*")) == ["gen-000002", "gen-000003"]

    real = generations.current_name
    stale = iter(["gen-000001"])  # what a reader saw in CURRENT before the last two ingests
    monkeypatch.setattr(generations, "current_name", lambda d: next(stale, None) or real(d))
    assert Index.load(index).generation.name == "gen-000003"


def test_stray_generation_names_are_ignored(tmp_path, run_json):
    notes, index = _notes(tmp_path, {"a.md": HNSW}), tmp_path / "idx"
    run_json("ingest", str(notes), "--index", str(index))
    (index / "gen-abc").mkdir()
    (notes / "b.md").write_text(LORA)
    assert run_json("ingest", str(notes), "--index", str(index))["added"] == 1
    assert (index / "CURRENT").read_text() == "gen-000002"
    assert (index / "gen-abc").is_dir()


def test_reader_is_pointed_at_an_intact_generation(tmp_path, run, run_json):
    notes, index = _notes(tmp_path, {"a.md": HNSW}), tmp_path / "idx"
    run_json("ingest", str(notes), "--index", str(index))
    reader = Index.load(index)
    for text in (LORA, QLORA):
        (notes / "b.md").write_text(text)
        run_json("ingest", str(notes), "--index", str(index))
    with pytest.raises(UserError, match="run the command again") as replaced:
        reader.search("HNSW", 1, "bm25")
    assert f"delete {index}" not in str(replaced.value)

    (index / "gen-000003" / "chunks.jsonl").write_text('{"chunk_id": "trunc')
    result = run("search", "HNSW", "--index", str(index))
    assert result.exit_code == 1
    assert "is corrupt" in result.stderr and "gen-000002 is intact" in result.stderr
    assert f"delete {index}" not in result.stderr
    (index / "CURRENT").write_text("gen-000002")
    assert _sources(run_json, "HNSW graphs", index) == ["a.md"]


def test_same_files_reached_by_other_paths_are_indexed_once(tmp_path, run_json):
    notes = _notes(tmp_path, {"a.md": HNSW, "b.md": LORA, "copy.md": HNSW})
    link, index = tmp_path / "link", tmp_path / "idx"
    os.symlink(notes, link)
    first = run_json("ingest", str(notes), "--index", str(index))
    assert _counts(first) == (2, 0, 0, 0)
    duplicate = {"path": str(notes / "copy.md"), "reason": f"duplicate of {notes / 'a.md'}"}
    assert first["skipped"] == [duplicate]
    for roots in ([str(link)], [f"{notes}/../notes"], [str(notes), str(link)]):
        again = run_json("ingest", *roots, "--index", str(index))
        assert (again["added"], again["unchanged"], again["chunks"]) == (0, 2, first["chunks"])
        assert again["skipped"] == [duplicate]
    hits = run_json("search", "HNSW nearest neighbour", "-k", "10", "--index", str(index))
    texts = [h["text"] for h in hits["results"]]
    assert texts and len(texts) == len(set(texts))
