"""Retrieval quality on the sample corpus and question set (acceptance: hit@5 >= 85%)."""

from pathlib import Path

import pytest

from eval.dataset import load_questions
from eval.retrieval_metrics import hit_at
from retrieval.store import Index


def _hit_rate(index: Index, retriever: str, lang: str) -> float:
    questions = load_questions()
    by_id = {q.id: q for q in questions}
    hits = []
    for q in questions:
        if not q.answerable or q.lang != lang:
            continue
        text = f"{by_id[q.follows].question} {q.question}" if q.follows else q.question
        docs = [Path(h.chunk.source).name for h in index.search(text, 5, retriever)]
        hits.append(hit_at(docs, set(q.sources), 5))
    return sum(hits) / len(hits)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_hybrid_finds_the_supporting_document_in_top5(sample_index, lang):
    assert _hit_rate(Index.load(sample_index), "hybrid", lang) >= 0.85


def test_hybrid_is_not_dragged_below_bm25_on_korean(sample_index):
    index = Index.load(sample_index)
    assert _hit_rate(index, "hybrid", "ko") >= _hit_rate(index, "bm25", "ko")
