"""Document-level retrieval metrics over a ranked list of chunk sources.

A retrieved chunk counts as relevant when its document is one of the question's
supporting documents; a document counts once, at its best rank.
"""

import math


def _first_ranks(ranked_docs: list[str], relevant: set[str]) -> list[int]:
    """1-based ranks at which each relevant document first appears."""
    seen: set[str] = set()
    ranks = []
    for rank, doc in enumerate(ranked_docs, 1):
        if doc in relevant and doc not in seen:
            seen.add(doc)
            ranks.append(rank)
    return ranks


def hit_at(ranked_docs: list[str], relevant: set[str], k: int) -> float:
    """1 when any supporting document is in the top k, else 0."""
    return float(any(r <= k for r in _first_ranks(ranked_docs, relevant)))


def recall_at(ranked_docs: list[str], relevant: set[str], k: int) -> float:
    """Fraction of the supporting documents found in the top k."""
    return sum(r <= k for r in _first_ranks(ranked_docs, relevant)) / len(relevant)


def mrr_at(ranked_docs: list[str], relevant: set[str], k: int) -> float:
    ranks = [r for r in _first_ranks(ranked_docs, relevant) if r <= k]
    return 1.0 / ranks[0] if ranks else 0.0


def ndcg_at(ranked_docs: list[str], relevant: set[str], k: int) -> float:
    dcg = sum(1.0 / math.log2(r + 1) for r in _first_ranks(ranked_docs, relevant) if r <= k)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(relevant), k) + 1))
    return dcg / ideal
