"""A killed ingest keeps the embeddings of the files it finished: the next ingest reuses them,
re-embeds only the rest, and ends with the same index a clean ingest builds."""

import hashlib
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from eval import synthetic
from retrieval import store
from retrieval.embed_cache import EmbedCache
from retrieval.embedders.embedder import resolve_embedder
from retrieval.store import Index

FILES = 48  # 4 chunks each: three embedding batches, so a kill after the first leaves work
CHANGED = "# Changed\n\nZebra hyperloop quaternions replaced this note entirely.\n"


def _corpus(tmp_path: Path) -> Path:
    notes = tmp_path / "notes"
    synthetic.write_corpus(notes, synthetic.sections(FILES * 4, seed=7), per_file=4)
    return notes


def _entries(index: Path) -> dict[str, int]:
    """Finished cache entries by name, with their inode (a rewritten entry gets a new one)."""
    return {p.name: p.stat().st_ino for p in (index / "cache").glob("*.npz")}


def _kill_after_first_entry(notes: Path, index: Path) -> dict[str, int]:
    """Run `bitrag ingest` as a subprocess and SIGKILL it once a file's embeddings are cached."""
    cmd = [sys.executable, "-m", "agent", "ingest", str(notes), "--index", str(index), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600  # a guard against a hang, not a timing assertion
        while not _entries(index):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no cache entry appeared"
            time.sleep(0.05)
        assert proc.poll() is None, "the ingest finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (index / "CURRENT").exists()  # killed before its first generation was committed
    return _entries(index)


def _rows(index: Path) -> dict[str, tuple[dict, np.ndarray]]:
    loaded = Index.load(index)
    return {c.chunk_id: (asdict(c), loaded.vectors[i]) for i, c in enumerate(loaded.chunks)}


def test_killed_first_ingest_resumes_with_finished_files_reused(tmp_path, run_json):
    notes, index = _corpus(tmp_path), tmp_path / "idx"
    finished = _kill_after_first_entry(notes, index)
    assert 0 < len(finished) < FILES
    report = run_json("ingest", str(notes), "--index", str(index))
    assert report["added"] == FILES
    assert (report["reused_files"], report["embedded_files"]) == (
        len(finished),
        FILES - len(finished),
    )
    after = _entries(index)
    assert {name: after[name] for name in finished} == finished  # read back, never rewritten
    assert len(after) == FILES
    store.ingest([notes], tmp_path / "clean")
    resumed, clean = _rows(index), _rows(tmp_path / "clean")
    assert {k: row for k, (row, _) in resumed.items()} == {k: row for k, (row, _) in clean.items()}
    # unit vectors; under bf16 (AMX CPUs) a text's vector moves ~1e-4 with its batch-mates
    for chunk_id, (_, vector) in clean.items():
        assert float(np.dot(resumed[chunk_id][1], vector)) > 0.9999, chunk_id


def test_changed_file_is_embedded_again_not_taken_from_the_cache(tmp_path, run_json):
    notes, index = _corpus(tmp_path), tmp_path / "idx"
    finished = _kill_after_first_entry(notes, index)
    cache = EmbedCache.for_index(index, resolve_embedder())
    cached = [
        path
        for path in sorted(notes.iterdir())
        if cache.path(hashlib.sha256(path.read_bytes()).hexdigest()).name in finished
    ]
    assert len(cached) == len(finished)
    cached[0].write_text(CHANGED)
    report = run_json("ingest", str(notes), "--index", str(index))
    assert (report["reused_files"], report["embedded_files"]) == (
        len(finished) - 1,
        FILES - len(finished) + 1,
    )
    query = ("search", "zebra hyperloop quaternions", "--retriever", "bm25", "-k", "1")
    hits = run_json(*query, "--index", str(index))
    assert [(h["source"], h["text"]) for h in hits["results"]] == [
        (str(cached[0]), CHANGED.split("\n\n")[1].strip())
    ]
    assert len(_entries(index)) == FILES  # the old text's entry was pruned after the commit


def test_damaged_cache_entry_counts_as_missing(tmp_path):
    notes = tmp_path / "notes"
    synthetic.write_corpus(notes, synthetic.sections(3, seed=3), per_file=1)
    index = tmp_path / "idx"
    first = store.ingest([notes], index)
    for generation in index.glob("gen-*"):  # as if the ingest had died before its commit
        shutil.rmtree(generation)
    (index / "CURRENT").unlink()
    damaged = sorted((index / "cache").glob("*.npz"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    second = store.ingest([notes], index)
    assert (first.embedded_files, first.reused_files) == (3, 0)
    assert (second.embedded_files, second.reused_files) == (1, 2)
    Index.load(index).verify()
