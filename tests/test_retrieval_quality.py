"""Retrieval quality on the sample corpus and question set (acceptance: hit@5 >= 85%), and
the fusion and language-centred dense search hybrid retrieval is built from."""

from pathlib import Path

import faiss
import numpy as np
import pytest

from eval.dataset import load_questions
from eval.retrieval_metrics import hit_at
from retrieval import hybrid
from retrieval.dense import HNSW_M, ExactDense, FaissDense, LanguageCentered
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


def test_fusion_keeps_a_clear_bm25_winner_and_lets_dense_break_a_near_tie():
    dense = [(2, 0.05), (1, 0.04), (3, 0.0), (0, -0.02)]  # centred cosines: 0 ranked last
    clear = [(0, 20.0), (1, 10.0), (2, 9.5)]
    assert [i for i, _ in hybrid.fuse(clear, dense, 0.3, 3)] == [0, 2, 1]
    near_tie = [(0, 10.0), (1, 9.9), (2, 1.0)]
    assert [i for i, _ in hybrid.fuse(near_tie, dense, 0.3, 2)] == [1, 0]


def test_fusion_without_one_side_is_the_other_sides_order():
    lexical = [(4, 7.0), (2, 3.0), (9, 1.0)]
    dense = [(9, 0.9), (2, 0.5)]
    assert [i for i, _ in hybrid.fuse(lexical, dense, 0.0, 3)] == [4, 2, 9]
    assert [i for i, _ in hybrid.fuse([], dense, 0.3, 3)] == [9, 2]


def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("hnsw", [False, True])
def test_masked_faiss_search_matches_exact_search_inside_the_mask(hnsw):
    vectors, queries = _unit_rows(600, 32, 0), _unit_rows(5, 32, 1)
    mask = np.random.default_rng(2).random(600) < 0.2
    if hnsw:
        index = faiss.IndexHNSWFlat(32, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.add(vectors)
    else:
        index = faiss.IndexFlatIP(32)
        index.add(vectors)
    for q in queries:
        exact = [i for i, _ in ExactDense(vectors).top(q, 10, mask)]
        found = [i for i, _ in FaissDense(index).top(q, 10, mask)]
        assert all(mask[found]) and len(set(found) & set(exact)) >= 9


def test_language_centring_subtracts_each_languages_mean_score():
    vectors = _unit_rows(40, 16, 3)
    langs = ["ko" if i % 3 == 0 else "en" for i in range(40)]
    query = _unit_rows(1, 16, 4)[0]
    centred = LanguageCentered(FaissDense.build(vectors), vectors, langs).top(query, 40)
    is_ko = np.array(langs) == "ko"
    raw = vectors @ query
    means = {"ko": raw[is_ko].mean(), "en": raw[~is_ko].mean()}
    assert sorted(i for i, _ in centred) == list(range(40))
    for i, score in centred:
        assert score == pytest.approx(raw[i] - means[langs[i]], abs=1e-5)
