"""Embeddings in numpy (retrieval.embedders.bert_numpy) against the real sentence-transformers
models in float32, MiniLM and e5, and a fresh process that searches and matches by meaning without
ever importing torch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from retrieval.embedders import bert_numpy
from retrieval.embedders.e5_convert import ensure_converted
from retrieval.embedders.embedder import (
    Embedder,
    _model,
    e5_embedder,
    embed,
    embedded_embedder_path,
)
from retrieval.store import ingest

TEXTS = [
    "What does QLoRA quantize the base model to?",
    "QLoRA는 기본 모델을 무엇으로 양자화하나요?",
    "LoRA 랭크 r=16, α=32 — 학습률은 2e-4 정도?",
    "",
    "  Café naïve résumé, ÅNGSTRÖM units \n",
    "emoji 🚀 and 中文 and عربى and x" + "y" * 150,
    "How many warm-up steps do the notes recommend for LoRA fine-tuning of a 7B model?",
    " ".join(f"step{i} 한국어 adapters" for i in range(400)),  # far past either max length
]


def _same_as_float32_model(embedder: Embedder, ours: bert_numpy.Bert, max_length: int) -> float:
    """Token ids and query and passage vectors against the sentence-transformers model,
    in float32 (embed(kind="passage") would use bf16 on AMX CPUs); returns the largest
    difference of any vector component."""
    model = _model(embedder.path, embedder.source)
    for text in TEXTS:
        expected = model.preprocess([text])["input_ids"][0].tolist()
        assert ours.tokenize(text) == expected, text
    assert len(ours.tokenize(TEXTS[-1])) == model.max_seq_length == max_length

    worst = 0.0
    for kind in ("query", "passage"):
        vectors = embed(TEXTS, embedder, kind=kind, few=True)
        prefixed = [embedder.prefix(kind) + t for t in TEXTS]
        theirs = model.encode(prefixed, normalize_embeddings=True, convert_to_numpy=True)
        assert vectors.dtype == np.float32 and vectors.shape == theirs.shape == (len(TEXTS), 384)
        assert (np.sum(vectors * theirs, axis=1) >= 0.9999).all(), kind
        worst = max(worst, float(np.abs(vectors - theirs).max()))
    assert embed([], embedder, kind="query").shape == (0, 384)
    return worst


def test_minilm_matches_sentence_transformers_float32():
    path = embedded_embedder_path()
    minilm = Embedder(path, "all-MiniLM-L6-v2", frozenset({"en"}))
    assert _same_as_float32_model(minilm, bert_numpy.load_minilm(path), 256) < 1e-5


def test_e5_matches_sentence_transformers_float32():
    e5 = e5_embedder()
    assert (e5.query_prefix, e5.passage_prefix) == ("query: ", "passage: ")
    ours = bert_numpy.load_e5(ensure_converted(e5.source, e5.path))
    assert _same_as_float32_model(e5, ours, 512) < 1e-5


SEARCH = """
import json, sys
from pathlib import Path
from agent import semantic
from retrieval.store import Index

index = Index.load(Path(sys.argv[1]))
dense = index.search("How long should a pasta sauce cook?", 1, "dense")
hybrid = index.search("How long should a pasta sauce cook?", 1, "hybrid")
# "the largest value half-precision floating point can represent?"
question = "반정밀도 부동소수점으로 나타낼 수 있는 가장 큰 값은?"
found = semantic.match(question, index.search(question, 10, "hybrid"))
print(json.dumps({
    "dense": Path(dense[0].chunk.source).name,
    "hybrid": Path(hybrid[0].chunk.source).name,
    "meaning": Path(found.evidence[0].source).name,
    "numpy": "retrieval.embedders.bert_numpy" in sys.modules,
    "torch": "torch" in sys.modules,
}))
"""


def test_search_and_semantic_match_in_a_fresh_process_never_import_torch(tmp_path: Path):
    notes = tmp_path / "notes"
    notes.mkdir()
    for name, text in {
        "lora.md": "# Adapters\n\nLoRA trains low-rank matrices beside frozen weights.\n",
        "tomato.md": "# Cooking\n\nSimmer the tomato passata for twenty minutes.\n",
        "faiss.md": "# Vectors\n\nFAISS builds HNSW graphs for nearest neighbours.\n",
        "fp16.md": "# Floats\n\nHalf precision floats reach at most 65504, then overflow.\n",
        "tp.md": "# Scaling\n\nTensor parallelism splits each weight matrix across GPUs.\n",
    }.items():
        (notes / name).write_text(text)
    ingest([notes], tmp_path / "index")  # passages: sentence-transformers, in this process
    e5 = e5_embedder()
    ensure_converted(e5.source, e5.path)  # once, under this test's BITRAG_HOME

    out = subprocess.run(
        [sys.executable, "-c", SEARCH, str(tmp_path / "index")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout) == {
        "dense": "tomato.md",
        "hybrid": "tomato.md",
        "meaning": "fp16.md",
        "numpy": True,
        "torch": False,
    }
