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
from dataclasses import dataclass

from agent.evidence import NUMBER, TermWeights, sentences
from retrieval.tokenize import tokenize

_MARKER = re.compile(r"\[(\d+)\]")
_LEADING_MARKERS = re.compile(r"^(\s*\[\d+\])+\s*")
_PIECE = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")
NEAR = 3  # pieces on each side of a number in the answer that say what it counts
EVIDENCE_NEAR = 5  # ... and in the evidence, which states it at more length
RARE_WEIGHT = 2.5  # terms this rare (evidence.TermWeights) must be backed by the evidence
_SUFFIXES = ("ing", "ed", "es", "e", "s")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    answer: str  # the answer with repeats removed and invalid markers dropped
    cited: list[int]


def _key(sentence: str) -> str:
    return " ".join(_MARKER.sub("", sentence).lower().split())


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
    return f"{text[lead.end():]} {''.join(lead.group(0).split())}"


def _root(term: str) -> str:
    """A crude English root, so "stored" matches "stores"; other terms stay as they are."""
    if term.isascii() and term.isalpha() and len(term) > 4:
        for suffix in _SUFFIXES:
            if term.endswith(suffix):
                return term[: -len(suffix)]
    return term


def _roots(text: str) -> set[str]:
    return {_root(t) for t in tokenize(text)}


def _pieces(text: str) -> list[str]:
    return [p.replace(",", "") for p in _PIECE.findall(_MARKER.sub(" ", text))]


def _number_contexts(text: str, near: int = NEAR) -> list[tuple[str, set[str]]]:
    """Each number of `text` with the terms written within `near` pieces of it."""
    pieces = _pieces(text)
    found = []
    for i, piece in enumerate(pieces):
        if NUMBER.fullmatch(piece):
            window = " ".join(pieces[max(0, i - near) : i + near + 1])
            found.append((piece, {t for t in tokenize(window) if not NUMBER.fullmatch(t)}))
    return found


def _bound(number: str, near: set[str], evidence: list[str], question: str) -> bool:
    """Whether some evidence sentence (or the question) states `number` next to at least
    one of the terms the answer puts next to it ("2 mantissa bits" needs a sentence where
    2 stands by "mantissa" or "bit"; a stray "2^-7" elsewhere does not count)."""
    for text in [*evidence, question]:
        for other, around in _number_contexts(text, EVIDENCE_NEAR):
            if other == number and (not near or near & around):
                return True
    return False


def verify(answer: str, question: str, evidence: list[str], weights: TermWeights) -> Verdict:
    """Whether `answer` is supported by `evidence` (numbered from 1) for `question`."""
    text = drop_repeats(answer.strip())
    given = range(1, len(evidence) + 1)
    cited = sorted({int(n) for n in _MARKER.findall(text) if int(n) in given})
    bad_markers = [n for n in _MARKER.findall(text) if int(n) not in given]
    text = _MARKER.sub(lambda m: m.group(0) if int(m.group(1)) in given else "", text).strip()
    text = _markers_last(text)
    support_terms = _roots(" ".join(evidence)) | _roots(question)
    new_terms = set(tokenize(_MARKER.sub("", text))) - set(tokenize(question))

    def fail(reason: str) -> Verdict:
        return Verdict(False, reason, text, cited)

    if not text:
        return fail("empty answer")
    if bad_markers:
        return fail(f"cites [{', '.join(bad_markers)}], which was not given")
    unbound = [n for n, near in _number_contexts(text) if not _bound(n, near, evidence, question)]
    if unbound:
        return fail(f"numbers not in the evidence with what they count: {', '.join(unbound)}")
    foreign = sorted(
        t
        for t in new_terms
        if _root(t) not in support_terms
        and (not weights.known(t) or weights.weight(t) >= RARE_WEIGHT)
    )
    if foreign:
        return fail(f"terms not in the evidence: {', '.join(foreign)}")
    if not {_root(t) for t in new_terms} & support_terms:
        return fail("adds nothing that the evidence says")
    return Verdict(True, "supported", text, _supporting(cited, new_terms, evidence))


def _supporting(cited: list[int], new_terms: set[str], evidence: list[str]) -> list[int]:
    """The cited items that share the answer's new terms; when none does, the item that
    shares the most (so every citation points at text that supports the answer)."""
    roots = {_root(t) for t in new_terms}
    overlap = {n: len(roots & _roots(e)) for n, e in enumerate(evidence, 1)}
    kept = [n for n in cited if overlap[n]]
    return kept or [max(overlap, key=lambda n: (overlap[n], -n))]
