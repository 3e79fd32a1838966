"""Notes folders holding things that are not regular files: skipped and named, never read."""

import json
import os
import subprocess
import sys
from pathlib import Path


def _ingest(notes: Path, index: Path, home: Path) -> dict:
    """`bitrag ingest` in a subprocess with a deadline, so a regression hangs no test run."""
    out = subprocess.run(
        [sys.executable, "-m", "agent", "ingest", str(notes), "--index", str(index), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ | {"BITRAG_HOME": str(home)},
    )
    assert out.stdout, out.stderr
    return json.loads(out.stdout)


def test_a_fifo_and_a_link_to_dev_zero_are_skipped(tmp_path, home):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "real.md").write_text("# KV cache\n\nThe KV cache holds keys and values.\n")
    os.mkfifo(notes / "notes.md")
    (notes / "x.txt").symlink_to("/dev/zero")
    report = _ingest(notes, tmp_path / "index", home)
    assert report["added"] == 1 and report["chunks"] >= 1
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons["notes.md"] == "not a regular file (a FIFO)"
    assert len(reasons) == 2  # the /dev/zero link is named too, never read


def test_a_fifo_given_directly_is_skipped(tmp_path, home):
    fifo = tmp_path / "talk.txt"
    os.mkfifo(fifo)
    report = _ingest(fifo, tmp_path / "index", home)
    assert report["skipped"] == [{"path": str(fifo), "reason": "not a regular file (a FIFO)"}]


def test_an_ingest_that_indexes_nothing_fails_with_one_line(run, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "blob.txt").write_bytes(b"\x00\x01\x02")
    result = run("ingest", str(notes), "--index", str(tmp_path / "index"))
    assert result.exit_code == 1
    assert result.stdout == "added 0, updated 0, unchanged 0, removed 0, chunks 0\n"
    assert result.stderr.splitlines() == [
        f"skipped {notes / 'blob.txt'}: binary content",
        f"Error: nothing under {notes} could be indexed: every file was skipped",
    ]
    (notes / "blob.txt").unlink()
    result = run("ingest", str(notes), "--index", str(tmp_path / "index"))
    assert result.stderr == f"Error: no supported files (.txt .md .pdf .html) under {notes}\n"
