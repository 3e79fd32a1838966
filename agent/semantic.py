"""Semantic evidence: the retrieved sentences closest in meaning to the question.

Term overlap cannot see a paraphrase ("how surprised a model is by a text" for
perplexity) or a Korean question over English notes. When the terms of the
question are not covered, the agent asks multilingual-e5-small (it reads Korean
and English) which sentences of the retrieved chunks mean what the question
asks, and answers only when the best of them is close enough: on the dev split,
a best-sentence cosine of 0.88 answered 0.73 of the answerable questions and
abstained on 0.74 of the unanswerable ones, against 0.61 / 0.58 for term
coverage alone. The model loads only when this path is taken, and runs in numpy
(retrieval.bert_numpy): no torch, so a cold `bitrag ask` pays ~1.5 s here, not 6-8 s.

e5 scores a sentence in the other language lower than a same-language one that says
the same (on the sample corpus a Korean query's cosine averages 0.84 to Korean chunks
and 0.79 to English ones), so a sentence in the language the question is not in earns
CROSS_LANGUAGE before it is compared: a cross-language answer then needs 0.86, the
value that separated answerable from unanswerable cross-language questions on dev.
"""

from dataclasses import dataclass

import numpy as np

from agent.evidence import MAX_EVIDENCE, MIN_SENTENCE_CHARS, Evidence, overlaps, passage, units
from retrieval.embedder import Embedder, e5_embedder, embed
from retrieval.store import Hit
from retrieval.tokenize import language

MIN_SIMILARITY = 0.88  # best question/sentence cosine that counts as covered (dev split)
CROSS_LANGUAGE = 0.02  # added to the cosine of a sentence not in the question's language (dev)
MAX_SENTENCES = 120  # sentences embedded per question, best-ranked chunks first


@dataclass(frozen=True)
class Match:
    evidence: list[Evidence]
    similarity: float  # cosine of the question and its closest sentence (language-adjusted)


def _candidates(hits: list[Hit]) -> list[tuple[str, str, Hit]]:
    """(sentence, its passage, hit) for the sentences of the hits, best chunks first."""
    found = []
    for hit in hits:
        kept = [(s, row) for s, row in units(hit.chunk.text) if len(s) >= MIN_SENTENCE_CHARS]
        found += [(s, passage(kept, i), hit) for i, (s, _) in enumerate(kept)]
    return found[:MAX_SENTENCES]


def match(question: str, hits: list[Hit], embedder: Embedder | None = None) -> Match:
    """The sentences of `hits` closest to `question`, as evidence, and the best cosine."""
    candidates = _candidates(hits)
    if not candidates:
        return Match([], 0.0)
    embedder = embedder or e5_embedder()
    query = embed([question], embedder, kind="query")[0]
    vectors = embed([s for s, _, _ in candidates], embedder, kind="passage", few=True)
    asked_in = language(question)
    across = np.array([language(s) != asked_in for s, _, _ in candidates])
    cosines = vectors @ query + CROSS_LANGUAGE * across
    chosen: list[Evidence] = []
    for i in np.argsort(-cosines, kind="stable"):
        _, text, hit = candidates[i]
        if not any(overlaps(text, e.quote) for e in chosen):
            chosen.append(Evidence(text, hit.chunk.source, hit.chunk.chunk_id, float(cosines[i])))
        if len(chosen) == MAX_EVIDENCE:
            break
    return Match(chosen, float(cosines.max()))
