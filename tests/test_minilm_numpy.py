"""Query embeddings of the embedded MiniLM in numpy (retrieval.minilm_numpy), against the real
sentence-transformers model, and a dense search in a fresh process that never imports torch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from retrieval import minilm_numpy
from retrieval.embedder import _model, embed, embedded_embedder_path
from retrieval.store import ingest

TEXTS = [
    "What does QLoRA quantize the base model to?",
    "QLoRA는 기본 모델을 무엇으로 양자화하나요?",
    "LoRA 랭크 r=16, α=32 — 학습률은 2e-4 정도?",
    "",
    "  Café naïve résumé, ÅNGSTRÖM units \n",
    "emoji 🚀 and 中文 and عربى and x" + "y" * 150,
    "How many warm-up steps do the notes recommend for LoRA fine-tuning of a 7B model?",
    " ".join(f"step{i} 한국어 adapters" for i in range(400)),  # far past max_seq_length
]


def test_numpy_queries_match_sentence_transformers_float32():
    path = embedded_embedder_path()
    model = _model(path)  # float32: embed(kind="passage") would use bf16 on AMX CPUs
    tokenizer = minilm_numpy.load(path).tokenizer
    for text in TEXTS:
        expected = model.preprocess([text])["input_ids"][0].tolist()
        assert tokenizer.encode(text).ids == expected, text
    assert len(tokenizer.encode(TEXTS[-1]).ids) == model.max_seq_length == 256

    ours = embed(TEXTS, kind="query")
    theirs = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (len(TEXTS), 384)
    assert (np.sum(ours * theirs, axis=1) >= 0.9999).all()
    assert np.abs(ours - theirs).max() < 1e-5
    assert embed([], kind="query").shape == (0, 384)


SEARCH = """
import json, sys
from pathlib import Path
from retrieval.store import Index

index = Index.load(Path(sys.argv[1]))
dense = index.search("How long should a pasta sauce cook?", 1, "dense")
hybrid = index.search("How long should a pasta sauce cook?", 1, "hybrid")
print(json.dumps({
    "dense": Path(dense[0].chunk.source).name,
    "hybrid": Path(hybrid[0].chunk.source).name,
    "numpy": "retrieval.minilm_numpy" in sys.modules,
    "torch": "torch" in sys.modules,
}))
"""


def test_dense_search_in_a_fresh_process_never_imports_torch(tmp_path: Path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "lora.md").write_text(
        "# Adapters\n\nLoRA trains low-rank matrices beside frozen weights.\n"
    )
    (notes / "tomato.md").write_text("# Cooking\n\nSimmer the tomato passata for twenty minutes.\n")
    (notes / "faiss.md").write_text(
        "# Vectors\n\nFAISS builds HNSW graphs for nearest neighbours.\n"
    )
    ingest([notes], tmp_path / "index")  # passages: sentence-transformers, in this process

    out = subprocess.run(
        [sys.executable, "-c", SEARCH, str(tmp_path / "index")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found = json.loads(out.stdout)
    assert found == {"dense": "tomato.md", "hybrid": "tomato.md", "numpy": True, "torch": False}
