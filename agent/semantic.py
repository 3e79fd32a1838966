"""Meaning: how close the retrieved sentences come to what the question asks.

multilingual-e5-small (it reads Korean and English) embeds the question and the
sentences of the retrieved chunks. The agent answers only when some sentence comes
within MIN_SIMILARITY of the question. Term overlap alone cannot tell a passage that
states what is asked from one that merely names the same things ("How many parameters
does BGE-M3 have?" over a note that gives BGE-M3's dimensions and languages): on the dev
split (84 first questions) gating every question on this cosine answered 0.78 of the
answerable ones and abstained on 0.70 of the unanswerable ones, against 0.83 / 0.45
for term coverage with the cosine asked only when the terms fall short.

When the question's terms are not covered (a paraphrase, another language), the closest
sentences are also the evidence (`match`); when they are, the evidence is lexical and
only the gate is needed (`reaches`: the lexical evidence is embedded first, and the rest
only while nothing has reached the threshold). The model runs in numpy
(retrieval.embedders.bert_numpy): no torch.

e5 scores a sentence in the other language lower than a same-language one that says
the same (on the sample corpus a Korean query's cosine averages 0.84 to Korean chunks
and 0.79 to English ones), so a sentence in the language the question is not in earns
CROSS_LANGUAGE before it is compared: a cross-language answer then needs 0.86, the
value that separated answerable from unanswerable cross-language questions on dev.
"""

from dataclasses import dataclass, replace

import numpy as np

from agent.evidence import MAX_EVIDENCE, MIN_SENTENCE_CHARS, Evidence, overlaps, passage, units
from retrieval.embedders.embedder import Embedder, e5_embedder, embed
from retrieval.store import Hit
from retrieval.tokenize import language

MIN_SIMILARITY = 0.88  # best question/sentence cosine that counts as covered (dev split)
CROSS_LANGUAGE = 0.02  # added to the cosine of a sentence not in the question's language (dev)
MAX_SENTENCES = 120  # sentences embedded per question, best-ranked chunks first
BATCH = 16  # sentences `reaches` embeds between looks at the best cosine


@dataclass(frozen=True)
class Match:
    evidence: list[Evidence]
    similarity: float  # cosine of the question and its closest sentence (language-adjusted)


def _candidates(hits: list[Hit]) -> list[tuple[str, Evidence]]:
    """(sentence, its passage as evidence, scored 0) for the sentences of the hits, best
    chunks first."""
    found = []
    for hit in hits:
        kept = [(s, row) for s, row in units(hit.chunk.text) if len(s) >= MIN_SENTENCE_CHARS]
        chunk = hit.chunk
        found += [
            (s, Evidence(passage(kept, i), chunk.source, chunk.chunk_id, 0.0, cells))
            for i, (s, cells) in enumerate(kept)
        ]
    return found[:MAX_SENTENCES]


def _cosines(
    question: str, sentences: list[str], embedder: Embedder, query: np.ndarray | None = None
) -> np.ndarray:
    """Language-adjusted cosines of `question` (embedded as `query` when given) to each
    sentence."""
    if query is None:
        query = embed([question], embedder, kind="query")[0]
    vectors = embed(sentences, embedder, kind="passage", few=True)
    asked_in = language(question)
    across = np.array([language(s) != asked_in for s in sentences])
    return vectors @ query + CROSS_LANGUAGE * across


def match(question: str, hits: list[Hit], embedder: Embedder | None = None) -> Match:
    """The sentences of `hits` closest to `question`, as evidence, and the best cosine."""
    candidates = _candidates(hits)
    if not candidates:
        return Match([], 0.0)
    cosines = _cosines(question, [s for s, _ in candidates], embedder or e5_embedder())
    chosen: list[Evidence] = []
    for i in np.argsort(-cosines, kind="stable"):
        found = candidates[i][1]
        if not any(overlaps(found.quote, e.quote) for e in chosen):
            chosen.append(replace(found, score=float(cosines[i])))
        if len(chosen) == MAX_EVIDENCE:
            break
    return Match(chosen, float(cosines.max()))


def reaches(
    question: str, hits: list[Hit], first: list[Evidence], embedder: Embedder | None = None
) -> float:
    """The best cosine of `question` to the sentences of `hits`, looking at the sentences
    of the passages `first` before the others and stopping once MIN_SIMILARITY is reached:
    whether some sentence is that close decides as `match` would, at a fraction of the cost
    when the lexical evidence already says what is asked."""
    quotes = {e.quote for e in first}
    sentences = [s for s, _ in _candidates(hits)]
    leading = [s for s in sentences if any(s in q for q in quotes)]
    rest = [s for s in sentences if s not in leading]
    batches = [leading] + [rest[i : i + BATCH] for i in range(0, len(rest), BATCH)]
    embedder = embedder or e5_embedder()
    query = embed([question], embedder, kind="query")[0]
    best = 0.0
    for batch in filter(None, batches):
        best = max(best, float(_cosines(question, batch, embedder, query).max()))
        if best >= MIN_SIMILARITY:
            break
    return best
