"""Ingest loses no text: notes in a folder that cannot be read now keep their chunks, a note
of heading lines only (or one short line) is indexed and found, and BOM-marked UTF-16 and
UTF-32 notes are read, with the failing byte named when a note cannot be decoded."""

import codecs
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retrieval.chunking import MAX_CHARS, MIN_CHARS, chunk_document
from retrieval.loaders import Document, Page
from retrieval.store import Index, IndexRows, write_generation

HNSW = "# Graphs\n\nHNSW graphs answer approximate nearest neighbour queries.\n"
LORA = "# Adapters\n\nLoRA trains two small low-rank matrices per layer.\n"
WOMBAT = "# Burrows\n\nThe wombat digs long burrows with its strong claws.\n"
DENIED = "kept (unreadable now: Permission denied)"


def _notes(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    notes = tmp_path / "notes"
    for name, content in files.items():
        (notes / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (notes / name).write_bytes(content)
        else:
            (notes / name).write_text(content, encoding="utf-8")
    return notes


def _counts(report: dict) -> tuple[int, int, int, int]:
    return report["added"], report["updated"], report["unchanged"], report["removed"]


def _search(run_json, query: str, index: Path) -> list[dict]:
    return run_json("search", query, "--retriever", "bm25", "--index", str(index))["results"]


def _sources(run_json, query: str, index: Path) -> list[str]:
    return [Path(h["source"]).name for h in _search(run_json, query, index)]


def _ingest_without_override(notes: Path, index: Path) -> dict:
    """`bitrag ingest` in a process for which chmod 000 means unreadable, root included."""
    cmd = [sys.executable, "-m", "agent", "ingest", str(notes), "--index", str(index), "--json"]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@contextmanager
def _no_access(*folders: Path) -> Iterator[None]:
    for folder in folders:
        folder.chmod(0)
    try:
        yield
    finally:  # readable again, so the test can look and tmp_path can be cleaned
        for folder in folders:
            folder.chmod(0o755)


def test_notes_in_an_unreadable_folder_keep_their_chunks(tmp_path, run_json):
    files = {"top.md": LORA, "private/a.md": HNSW, "private/deeper/b.md": WOMBAT}
    notes, index = _notes(tmp_path, files), tmp_path / "idx"
    first = run_json("ingest", str(notes), "--index", str(index))
    (notes / "later").mkdir()  # a folder with nothing indexed yet
    (notes / "later" / "c.md").write_text("# Later\n\nA note added after the first ingest.\n")
    with _no_access(notes / "private", notes / "later"):
        report = _ingest_without_override(notes, index)
    assert _counts(report) == (0, 0, 1, 0)
    assert report["chunks"] == first["chunks"]
    assert report["skipped"] == [
        {"path": str(notes / "later"), "reason": "unreadable folder: Permission denied"},
        {"path": str(notes / "private"), "reason": "unreadable folder: Permission denied"},
        {"path": str(notes / "private" / "a.md"), "reason": DENIED},
        {"path": str(notes / "private" / "deeper" / "b.md"), "reason": DENIED},
    ]
    assert _sources(run_json, "HNSW graphs", index) == ["a.md"]
    assert _sources(run_json, "wombat burrows", index) == ["b.md"]
    again = run_json("ingest", str(notes), "--index", str(index))
    assert _counts(again) == (1, 0, 3, 0) and again["skipped"] == []


def test_notes_of_an_unreadable_root_keep_their_chunks(tmp_path, run_json):
    notes, index = _notes(tmp_path, {"a.md": HNSW, "b.md": LORA}), tmp_path / "idx"
    run_json("ingest", str(notes), "--index", str(index))
    with _no_access(notes):
        report = _ingest_without_override(notes, index)
    assert _counts(report) == (0, 0, 0, 0)
    assert [s["reason"] for s in report["skipped"]] == [
        "unreadable folder: Permission denied",
        DENIED,
        DENIED,
    ]
    assert _sources(run_json, "LoRA matrices", index) == ["b.md"]


def _headings(n: int) -> str:
    return "".join(f"# h{i}\n" for i in range(1, n + 1))


def test_a_note_of_heading_lines_only_is_indexed_and_found(tmp_path, run_json):
    files = {"outline.md": _headings(2000), "todo.txt": "Buy oat milk\n", "title.md": "# Kayak"}
    notes, index = _notes(tmp_path, files), tmp_path / "idx"
    report = run_json("ingest", str(notes), "--index", str(index))
    assert _counts(report) == (3, 0, 0, 0) and report["skipped"] == []
    chunks = Index.load(index).chunks
    assert {Path(c.source).name for c in chunks} == set(files)
    hits = _search(run_json, "h1234", index)
    assert "# h1234\n" in hits[0]["text"] + "\n"
    assert _sources(run_json, "oat milk", index) == ["todo.txt"]
    assert _sources(run_json, "kayak", index)[0] == "title.md"


def test_every_line_of_100000_headings_is_in_a_chunk():
    text = _headings(100_000)
    chunks = chunk_document(Document("/notes/outline.md", "markdown", [Page(text, None)]))
    lines = {line for c in chunks for line in c.text.splitlines()}
    assert lines == set(text.splitlines())
    assert max(len(c.text) for c in chunks) <= MAX_CHARS + MIN_CHARS


def test_a_note_an_older_bitrag_indexed_without_chunks_is_read_again(tmp_path, run_json):
    notes, index = _notes(tmp_path, {"a.md": HNSW, "outline.md": _headings(50)}), tmp_path / "idx"
    run_json("ingest", str(notes), "--index", str(index))
    old = Index.load(index)  # rewrite it as bitrag wrote it before: outline.md had no chunks
    rows = [i for i, c in enumerate(old.chunks) if not c.source.endswith("outline.md")]
    terms = old.terms()
    kept = IndexRows([old.chunks[i] for i in rows], [terms[i] for i in rows], [old.vectors[rows]])
    write_generation(index, kept, old.docs, old.embedder)
    assert _sources(run_json, "h42", index) == []
    report = run_json("ingest", str(notes), "--index", str(index))
    assert _counts(report) == (0, 1, 1, 0)
    assert _sources(run_json, "h42", index) == ["outline.md"]


def _encoded(text: str, codec: str, bom: bytes) -> bytes:
    return bom + text.encode(codec)


def test_bom_marked_utf16_and_utf32_notes_are_read(tmp_path, run_json):
    words = {
        "le16.txt": ("wombat", "utf-16-le", codecs.BOM_UTF16_LE),
        "be16.md": ("numbat", "utf-16-be", codecs.BOM_UTF16_BE),
        "le32.txt": ("quokka", "utf-32-le", codecs.BOM_UTF32_LE),
        "be32.txt": ("bilby", "utf-32-be", codecs.BOM_UTF32_BE),
        "sig8.md": ("dingo", "utf-8", codecs.BOM_UTF8),
        "page.html": ("echidna", "utf-16-le", codecs.BOM_UTF16_LE),
    }
    files: dict[str, str | bytes] = {
        name: _encoded(f"The {word} lives in Australia, café.\n", codec, bom)
        for name, (word, codec, bom) in words.items()
    }
    files["page.html"] = _encoded("<p>The echidna lays eggs.</p>", "utf-16-le", codecs.BOM_UTF16_LE)
    files["odd.txt"] = codecs.BOM_UTF16_LE + "cut".encode("utf-16-le") + b"x"
    files["latin1.txt"] = "caf\xe9 cr\xe8me".encode("latin-1")
    notes, index = _notes(tmp_path, files), tmp_path / "idx"
    report = run_json("ingest", str(notes), "--index", str(index))
    assert report["added"] == len(words)
    assert sorted(report["skipped"], key=lambda s: s["path"]) == [
        {"path": str(notes / "latin1.txt"), "reason": "not valid UTF-8 (byte 3)"},
        {"path": str(notes / "odd.txt"), "reason": "not valid UTF-16 (byte 8)"},
    ]
    for name, (word, _, _) in words.items():
        hits = _search(run_json, word, index)
        assert [Path(h["source"]).name for h in hits] == [name]
        assert "\ufeff" not in hits[0]["text"] and "\x00" not in hits[0]["text"]
