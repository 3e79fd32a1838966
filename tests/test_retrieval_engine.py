"""The retrieval engine with its real parts: BM25 against rank-bm25, loaders, index store."""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from retrieval.bm25 import BM25
from retrieval.errors import UserError
from retrieval.langchain_retriever import BitragRetriever
from retrieval.paths import SAMPLE_CORPUS
from retrieval.scope import named_language
from retrieval.store import Index, ingest
from retrieval.tokenize import tokenize

FIXTURE_TEXTS = [
    "BM25 ranks documents by term frequency with saturation and length normalization.",
    "Dense retrieval embeds queries and chunks into vectors and compares them by cosine.",
    "FAISS offers flat, HNSW and IVF indexes for nearest neighbour search over vectors.",
    "양자화는 가중치를 적은 비트로 표현해서 메모리를 줄이는 기법이다.",
    "지식 증류에서는 교사 모델의 소프트 타깃을 학생 모델이 따라 배운다.",
    "형태소 분석기 Kiwi는 조사와 어미를 분리해서 BM25 검색을 돕는다.",
    "Reciprocal rank fusion combines BM25 and dense rankings with the constant k = 60.",
]


@pytest.mark.parametrize(
    "query",
    [
        "BM25 ranking",
        "vectors cosine search",
        "양자화 메모리",
        "교사 모델 학생",
        "BM25 검색",
        "k = 60",
    ],
)
def test_bm25_scores_match_rank_bm25(query):
    corpus = [tokenize(t) for t in FIXTURE_TEXTS]
    reference = BM25Okapi(corpus).get_scores(tokenize(query))
    matched, scores = BM25.build(corpus).scores(tokenize(query))
    ours = np.zeros(len(corpus))
    ours[matched] = scores
    assert matched.size > 0
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)


def _as_user_without_root_privileges() -> list[str]:
    """Root reads any file; drop the override capabilities so chmod 000 means unreadable."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_bad_files_are_skipped_with_reasons(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "good.md").write_text("# Good\n\nNF4 stores weights in 4 bits.\n")
    shutil.copy(SAMPLE_CORPUS / "knowledge-distillation-notes.pdf", notes / "good.pdf")
    shutil.copy(SAMPLE_CORPUS / "mcp-security-checklist.html", notes / "good.html")
    (notes / "binary.txt").write_bytes(b"ab\x00\x01\x02cd" * 10)
    (notes / "empty.md").write_text("\n\n  \n")
    (notes / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (notes / "zero.pdf").write_bytes(b"")
    (notes / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    (notes / "loop.md").symlink_to(notes / "loop.md")
    (notes / "parent-link").symlink_to(notes)  # a directory loop must not hang the walk
    (notes / "secret.md").write_text("# Secret\n\nunreadable\n")
    (notes / "secret.md").chmod(0)
    index = tmp_path / "idx"
    cmd = [sys.executable, "-m", "agent", "ingest", str(notes), "--index", str(index), "--json"]
    done = subprocess.run(
        _as_user_without_root_privileges() + cmd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons == {
        "binary.txt": "binary content",
        "empty.md": "empty",
        "latin1.txt": "not valid UTF-8 (byte 3)",
        "zero.pdf": "empty",
        "broken.pdf": reasons["broken.pdf"],
        "loop.md": "symlink loop",
        "secret.md": "unreadable: Permission denied",
    }
    assert reasons["broken.pdf"].startswith("corrupt pdf")
    assert report["added"] == 3
    loaded = Index.load(index)
    assert {Path(s).name for s in loaded.docs} == {"good.md", "good.pdf", "good.html"}
    pdf_pages = {c.page for c in loaded.chunks if c.source.endswith("good.pdf")}
    assert pdf_pages == {1, 2, 3}
    html_text = " ".join(c.text for c in loaded.chunks if c.source.endswith("good.html"))
    assert "127.0.0.1" in html_text
    assert "<" not in html_text


def test_edit_delete_and_unchanged_between_ingests(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    for name, text in {
        "keep.md": "# Keep\n\nHNSW graphs answer approximate nearest neighbour queries.\n",
        "edit.md": "# Edit\n\nLoRA trains two small matrices per layer.\n",
        "drop.txt": "Knowledge distillation uses a teacher and a student.\n",
    }.items():
        (notes / name).write_text(text)
    index = tmp_path / "idx"
    first = ingest([notes], index)
    assert (first.added, first.updated, first.unchanged, first.removed) == (3, 0, 0, 0)
    (notes / "edit.md").write_text("# Edit\n\nQLoRA quantizes the frozen base to NF4.\n")
    (notes / "drop.txt").unlink()
    second = ingest([notes], index)
    assert (second.added, second.updated, second.unchanged, second.removed) == (0, 1, 1, 1)
    loaded = Index.load(index)
    sources = {Path(h.chunk.source).name for h in loaded.search("NF4 frozen base", 5, "bm25")}
    assert sources == {"edit.md"}
    assert loaded.search("teacher student", 5, "bm25") == []
    assert loaded.search("LoRA matrices", 5, "bm25") == []
    keep = loaded.search("approximate nearest neighbour", 1, "hybrid")[0]
    assert Path(keep.chunk.source).name == "keep.md"
    assert loaded.vectors.shape == (len(loaded.chunks), 384)


def _write_notes(folder: Path, count: int) -> None:
    folder.mkdir()
    for n in range(count):
        text = f"# Note {n}\n\nTopic {n % 17} covers quantization step {n} and retrieval {n * 7}.\n"
        (folder / f"note-{n:05d}.md").write_text(text * 3)


def test_kill_during_ingest_keeps_previous_index(tmp_path):
    small, large, index = tmp_path / "small", tmp_path / "large", tmp_path / "idx"
    _write_notes(small, 3)
    ingest([small], index)
    _write_notes(large, 1500)
    cmd = [sys.executable, "-m", "agent", "ingest", str(large), "--index", str(index), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)
    assert proc.poll() is None, "ingest finished before it could be killed; use a larger folder"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survived = Index.load(index)
    assert len(survived.docs) == 3
    assert survived.search("quantization step", 3, "hybrid")
    rerun = ingest([large], index)
    assert (rerun.added, rerun.unchanged) == (1500, 0)
    assert len(Index.load(index).docs) == 1503


def test_index_problems_are_named(tmp_path, run):
    notes = tmp_path / "notes"
    _write_notes(notes, 2)
    index = tmp_path / "idx"
    ingest([notes], index)
    generation = index / (index / "CURRENT").read_text()
    manifest = json.loads((generation / "manifest.json").read_text())

    other = tmp_path / "other-embedder"
    other.symlink_to(Path(Index.load(index).embedder.path))
    os.environ["BITRAG_EMBEDDER"] = str(other)
    try:
        result = run("search", "quantization", "--index", str(index))
    finally:
        del os.environ["BITRAG_EMBEDDER"]
    assert result.exit_code == 1
    assert "was built with embedder 'all-MiniLM-L6-v2'" in result.stderr

    (generation / "manifest.json").write_text(json.dumps(manifest | {"format_version": 99}))
    result = run("search", "quantization", "--index", str(index))
    assert result.exit_code == 1
    assert "has format 99" in result.stderr and "rebuild" in result.stderr

    (generation / "manifest.json").write_text(json.dumps(manifest))
    (generation / "chunks.jsonl").write_text('{"chunk_id": "trunc')
    result = run("search", "quantization", "--index", str(index))
    assert result.exit_code == 1
    assert "is corrupt" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_langchain_retriever_returns_documents_with_citation_metadata(tmp_path):
    notes = tmp_path / "notes"
    _write_notes(notes, 5)
    index = tmp_path / "idx"
    ingest([notes], index)
    for kind in ("bm25", "dense", "faiss", "hybrid"):
        retriever = BitragRetriever(index=Index.load(index), retriever=kind, k=2)
        docs = retriever.invoke("quantization step 3")
        assert len(docs) == 2
        assert docs[0].metadata["rank"] == 1
        assert docs[0].metadata["chunk_id"].startswith(docs[0].metadata["source"])


def test_second_writer_is_refused_while_the_lock_is_held(tmp_path):
    notes = tmp_path / "notes"
    _write_notes(notes, 1)
    index = tmp_path / "idx"
    index.mkdir()
    with (index / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another bitrag process is writing"):
            ingest([notes], index)
    assert ingest([notes], index).added == 1


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("In my Korean FAISS notes, how many bytes does each link cost?", "ko"),
        ("According to my Korean LoRA practice notes, what is alpha?", "ko"),
        ("What does the English note say about HNSW?", "en"),
        ("한국어 강의 노트에 따르면 HNSW 링크는 몇 바이트야?", "ko"),
        ("영어 자료에서 HNSW는?", "en"),
        ("How is Korean text tokenized in the notes?", None),
        ("한국어로 답해줘: HNSW란?", None),
    ],
)
def test_the_language_a_question_names_for_its_notes(query, named):
    assert named_language(query) == named


def test_a_question_naming_its_notes_language_searches_only_those_notes(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    english = "# HNSW\n\nHNSW links cost 4 bytes each; M = 32 gives 256 bytes.\n"
    korean = "# HNSW 정리\n\nHNSW 그래프에서 M = 32면 벡터당 256바이트가 든다.\n"
    (notes / "hnsw.md").write_text(english)
    (notes / "hnsw-ko.md").write_text(korean)
    ingest([notes], tmp_path / "idx")
    index = Index.load(tmp_path / "idx")
    question = "In my Korean notes, how many bytes does HNSW use with M = 32?"
    for retriever in ("bm25", "dense", "faiss", "hybrid"):
        found = {Path(h.chunk.source).name for h in index.search(question, 5, retriever)}
        assert found == {"hnsw-ko.md"}, retriever
    unscoped = index.search("How many bytes does HNSW use with M = 32?", 5, "bm25")
    assert {Path(h.chunk.source).name for h in unscoped} == {"hnsw.md", "hnsw-ko.md"}
    assert named_language("In my Japanese notes, what is HNSW?") is None
