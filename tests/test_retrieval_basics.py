"""Tokenizing, embedding, ingesting and searching with the real components."""

import subprocess
import sys

import numpy as np

from retrieval.embedders.embedder import embed
from retrieval.tokenize import tokenize


def test_korean_text_yields_morphemes():
    terms = tokenize("양자화는 모델의 메모리를 줄인다. QAT와 PTQ를 비교한다.")
    assert "양자화" in terms and "메모리" in terms
    assert "qat" in terms and "ptq" in terms
    assert "는" not in terms


def test_english_text_is_lowercased_stemmed_and_stopped():
    assert tokenize("The Embeddings of Q4_K_M models") == ["embedding", "q4_k_m", "model"]


def test_embedder_ranks_paraphrase_above_unrelated():
    vectors = embed(
        [
            "How much memory does a 4-bit model need?",
            "The RAM needed by a model quantized to four bits.",
            "My cat sleeps on the sofa all afternoon.",
        ]
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def _counts(report: dict) -> tuple[int, int, int, int]:
    return report["added"], report["updated"], report["unchanged"], report["removed"]


def test_ingest_counts_and_search(run_json, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Alpha\n\nLoRA adds low-rank adapters to frozen weights.\n")
    (notes / "b.txt").write_text("FAISS HNSW graphs give approximate nearest neighbours.\n")
    (notes / "empty.md").write_text("   \n")
    (notes / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    index = str(tmp_path / "idx")
    first = run_json("ingest", str(notes), "--index", index)
    assert _counts(first) == (2, 0, 0, 0)
    assert {s["reason"] for s in first["skipped"]} == {"empty", "binary content"}
    (notes / "a.md").write_text("# Alpha\n\nQLoRA quantizes the frozen base to NF4.\n")
    (notes / "b.txt").unlink()
    second = run_json("ingest", str(notes), "--index", index)
    assert _counts(second) == (0, 1, 0, 1)
    hits = run_json("search", "NF4 base", "--retriever", "bm25", "--index", index)["results"]
    assert [h["source"] for h in hits] == [str(notes / "a.md")]
    assert run_json("search", "HNSW", "--retriever", "bm25", "--index", index)["results"] == []
    third = run_json("ingest", str(notes), "--index", index)
    assert _counts(third) == (0, 0, 1, 0)


def test_help_does_not_import_torch():
    code = (
        "import sys; from click.testing import CliRunner; from agent.cli import cli; "
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0; "
        "print('torch' in sys.modules, 'llama_cpp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
