"""Checks a generated answer against the evidence it was given.

A generated answer is kept only when
- it says something beyond the question that the evidence also says
  (an echo of the question, or text unrelated to the evidence, is not an answer);
- every number it states occurs in the evidence next to what it counts (a
  small model's "2 mantissa bits" fails although "2^-7" is in the evidence),
  and every rare term it adds occurs in the evidence or the question;
- every [n] it writes is one of the numbers given; citations that do not share
  the answer's terms are replaced by the evidence item that does.
Repeated sentences are dropped first, so a looping model cannot pass by
repeating a supported sentence.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass

from agent.evidence import NUMBER, TermWeights, sentences
from agent.numbers import MARKER, root, roots, unbound
from agent.wording import common_words, written_in
from retrieval.tokenize import tokenize

_LEADING_MARKERS = re.compile(r"^(\s*\[\d+\])+\s*")
MAX_SENTENCES = 3  # an answer: one short sentence per thing asked; the draft stops at the third
_WORDS = re.compile(r"[^\W\d_]")
RARE_WEIGHT = 2.5  # terms this rare (evidence.TermWeights) must be backed by the evidence


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    answer: str  # the answer with repeats removed and invalid markers dropped
    cited: list[int]


def _key(sentence: str) -> str:
    return " ".join(MARKER.sub("", sentence).lower().split())


def drop_repeats(answer: str) -> str:
    """The answer up to its first repeated sentence (a looping model's output ends there)."""
    seen: set[str] = set()
    kept: list[str] = []
    for sentence in sentences(answer):
        if _key(sentence) in seen:
            break
        seen.add(_key(sentence))
        kept.append(sentence)
    return " ".join(kept)


def has_repeat(answer: str) -> bool:
    keys = [_key(s) for s in sentences(answer)]
    return len(keys) != len(set(keys))


def _markers_last(text: str) -> str:
    """ "[1] The answer." reads as "The answer. [1]"."""
    lead = _LEADING_MARKERS.match(text)
    if not lead or lead.end() == len(text):
        return text
    return f"{text[lead.end() :]} {''.join(lead.group(0).split())}"


def verify(
    answer: str,
    question: str,
    evidence: list[str],
    weights: TermWeights,
    context: tuple[str, ...] = (),
    headings: Mapping[str, str] | None = None,
) -> Verdict:
    """Whether `answer` is supported by `evidence` (numbered from 1) for `question`;
    `context` (the passages a reader model read) backs it too, but is not cited; `headings`
    gives the section heading an evidence or context text stands under."""
    text = drop_repeats(answer.strip())
    given = range(1, len(evidence) + 1)
    cited = sorted({int(n) for n in MARKER.findall(text) if int(n) in given})
    bad_markers = [n for n in MARKER.findall(text) if int(n) not in given]
    text = MARKER.sub(lambda m: m.group(0) if int(m.group(1)) in given else "", text).strip()
    text = _markers_last(text)
    backing = [*evidence, *context]
    support_terms = _support(backing, question)
    new_terms = _new_terms(text, question)

    def fail(reason: str) -> Verdict:
        return Verdict(False, reason, text, cited)

    if not text:
        return fail("empty answer")
    if bad_markers:
        return fail(f"cites [{', '.join(bad_markers)}], which was not given")
    if reason := unsupported(text, question, evidence, weights, context, headings):
        return fail(reason)
    stated = {t for t in new_terms if NUMBER.fullmatch(t)}  # `unsupported` found them stated
    if not stated and not {root(t) for t in new_terms} & support_terms:
        return fail("adds nothing that the evidence says")
    return Verdict(True, "supported", text, _supporting(cited, new_terms, evidence))


def _support(evidence: list[str], question: str) -> set[str]:
    return roots(" ".join(evidence)) | roots(question)


def _new_terms(text: str, question: str) -> set[str]:
    return set(tokenize(MARKER.sub("", text))) - set(tokenize(question))


def unsupported(
    text: str,
    question: str,
    evidence: list[str],
    weights: TermWeights,
    read: tuple[str, ...] = (),
    headings: Mapping[str, str] | None = None,
) -> str:
    """Why `text` states what the evidence (and the passages a reader read) does not (a
    number without what it counts, a rare term), or "" when it does not. More text cannot
    take such a statement back, so a draft can be stopped as soon as one of its sentences
    fails here."""
    numbers = unbound(text, question, evidence, read, headings)
    if numbers:
        return f"numbers the evidence does not state for the same thing: {', '.join(numbers)}"
    support_terms = _support([*evidence, *read], question)
    backing = " ".join([*evidence, *read, question]).lower()
    foreign = sorted(
        t
        for t in _new_terms(text, question)
        if root(t) not in support_terms
        and not NUMBER.fullmatch(t)  # `unbound` has found it stated ("175 billion" as "175B")
        and not written_in(t, backing)
        and not (read and t in common_words())  # a reader's draft: its confirm judges those
        and (not weights.known(t) or weights.weight(t) >= RARE_WEIGHT)
    )
    return f"words the evidence does not use: {', '.join(foreign)}" if foreign else ""


def finished(draft: str) -> str:
    """The sentences of a streaming draft that have ended, with the citation markers that
    follow them; the last sentence may still be growing and is left out."""
    parts = sentences(draft)
    if len(parts) < 2:
        return ""
    markers = _LEADING_MARKERS.match(parts[-1])
    return " ".join([*parts[:-1], markers.group(0).strip() if markers else ""]).strip()


def said(text: str) -> int:
    """How many sentences of `text` have words (not only citation markers): a draft ends at
    MAX_SENTENCES."""
    return sum(1 for s in sentences(text) if _WORDS.search(MARKER.sub("", s)))


def _supporting(cited: list[int], new_terms: set[str], evidence: list[str]) -> list[int]:
    """The cited items that share the answer's new terms; when none does, the item that
    shares the most (so every citation points at text that supports the answer)."""
    said = {root(t) for t in new_terms}
    overlap = {n: len(said & roots(e)) for n, e in enumerate(evidence, 1)}
    kept = [n for n in cited if overlap[n]]
    return kept or [max(overlap, key=lambda n: (overlap[n], -n))]
