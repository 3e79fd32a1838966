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
from agent.wording import common_words, written_in
from retrieval.tokenize import tokenize

_MARKER = re.compile(r"\[(\d+)\]")
_LEADING_MARKERS = re.compile(r"^(\s*\[\d+\])+\s*")
_PIECE = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")
NEAR = 3  # pieces on each side of a number in the answer that say what it counts
EVIDENCE_NEAR = 5  # ... and in the evidence, which states it at more length
SUBJECT_NEAR = 3  # pieces from a number within which the question term it counts stands
# What a number is measured in, never what it counts ("8 bits of exponent" counts exponent).
UNITS = frozenset(
    "bit bits byte bytes b kb mb gb tb kib mib gib tib k m x % percent times".split()
    + "비트 바이트 개 배 번".split()
)
MAX_SENTENCES = 3  # an answer: one short sentence per thing asked; the draft stops at the third
_WORDS = re.compile(r"[^\W\d_]")
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
    return f"{text[lead.end() :]} {''.join(lead.group(0).split())}"


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


def _subjects(pieces: list[str], i: int, subjects: set[str]) -> set[str]:
    """The question terms (units left out) nearest to the number at pieces[i], both when
    two are equally near: what the number counts ("1-bit sign" -> sign)."""
    for distance in range(1, SUBJECT_NEAR + 1):
        found = set()
        for j in (i - distance, i + distance):
            if 0 <= j < len(pieces):
                found |= {_root(t) for t in tokenize(pieces[j])} & subjects
        if found:
            return found
    return set()


def _row_subjects(text: str, subjects: set[str]) -> list[tuple[str, set[str]]] | None:
    """For a table row ("Format: bfloat16, Sign: 1, Exponent: 8"), each number with the
    subject its column header names; None for prose."""
    cells = text.split(", ")
    if len(cells) < 2 or not all(": " in c for c in cells):
        return None
    key = {_root(t) for t in tokenize(cells[0].split(": ", 1)[0])} & subjects
    found = []
    for cell in cells:
        header, value = cell.split(": ", 1)
        named = {_root(t) for t in tokenize(header)} & subjects | key  # the row is about its key
        found += [(n, named) for n in _pieces(value) if NUMBER.fullmatch(n)]
    return found


def _clause_terms(sentence: str, number: str) -> set[str]:
    """The terms of the clauses of `sentence` that state `number` (split at commas,
    semicolons and "and"): what the number is said about, nearest or not."""
    clauses = re.split(r"[,;]|\band\b", sentence)
    return set().union(*(_roots(c) for c in clauses if number in _pieces(c)))


def _row_states(number: str, sentence: str, text: str, subjects: set[str]) -> bool:
    """Whether `text`, a table row the reader read, states `number` in a column whose header
    is a question term named in the answer's clause that states it: "Exponent: 8" backs "The
    exponent bit count is 8", where "count", not "exponent", is the term nearest the 8."""
    cells = text.split(", ")
    if len(cells) < 2 or not all(": " in c for c in cells):
        return False
    said = _clause_terms(sentence, number) & subjects
    for cell in cells:
        header, value = cell.split(": ", 1)
        numbers = [p for p in _pieces(value) if NUMBER.fullmatch(p)]
        if number in numbers and {_root(t) for t in tokenize(header)} & said:
            return True
    return False


def _subject_contexts(text: str, subjects: set[str]) -> list[tuple[str, set[str]]]:
    rows = _row_subjects(text, subjects)
    return _prose_subjects(text, subjects) if rows is None else rows


def _prose_subjects(text: str, subjects: set[str]) -> list[tuple[str, set[str]]]:
    """Each number of `text` with the question terms it counts (none for a name's digits)."""
    pieces = _pieces(text)
    glued = iter(_glued(text))
    return [
        (p, set() if next(glued) else _subjects(pieces, i, subjects))
        for i, p in enumerate(pieces)
        if NUMBER.fullmatch(p)
    ]


def _glued(text: str) -> list[bool]:
    """For each number of `text`, whether it is part of a name (bfloat16, Q4_K_M, pass@1),
    not a quantity on its own."""
    plain = _MARKER.sub(" ", text)
    return [
        m.start() > 0 and (plain[m.start() - 1].isalpha() or plain[m.start() - 1] == "@")
        for m in _PIECE.finditer(plain)
        if NUMBER.fullmatch(m.group(0).replace(",", ""))
    ]


def _bound(
    number: str,
    near: set[str],
    subject: set[str],
    evidence: list[str],
    question: str,
    subjects: set[str],
) -> bool:
    """Whether some evidence sentence (or the question) states `number` next to at least
    one of the terms the answer puts next to it ("2 mantissa bits" needs a sentence where
    2 stands by "mantissa" or "bit"; a stray "2^-7" elsewhere does not count), and, when the
    answer says which question term the number counts, counts that same thing there."""
    for text in [*evidence, question]:
        if _placed(number, near, text) and (
            not subject
            or any(
                other == number and subject & counted
                for other, counted in _subject_contexts(text, subjects)
            )
        ):
            return True
    return False


def _placed(number: str, near: set[str], text: str) -> bool:
    """Whether `text` states `number` next to one of the terms in `near` (any, when empty)."""
    return any(
        other == number and (not near or near & around)
        for other, around in _number_contexts(text, EVIDENCE_NEAR)
    )


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _is_name(word: str, first: bool) -> bool:
    """A word written as a name: a digit with letters (INT4, BGE-M3), two capitals
    (DistilBERT, FAISS) or a capital inside the sentence (Marlin)."""
    letters = any(c.isalpha() for c in word)
    capitals = sum(c.isupper() for c in word)
    return letters and (
        any(c.isdigit() for c in word)
        or capitals >= 2
        or (capitals == 1 and word[0].isupper() and not first)
    )


def _names(sentence: str, question: str) -> list[set[str]]:
    """The names of the question (`_is_name`) that `sentence` repeats, each as the set of its
    terms: what the sentence's numbers are said about (BGE-M3, Llama 2 7B, DistilBERT). A
    text names one when it has any of its terms ("L6" names all-MiniLM-L6-v2)."""
    said = set(tokenize(sentence))
    found = []
    for m in _NAME.finditer(question):
        if not _is_name(m.group(0), first=not question[: m.start()].strip()):
            continue
        terms = {_root(t) for t in tokenize(m.group(0)) if t in said and not NUMBER.fullmatch(t)}
        if terms - UNITS and terms not in found:
            found.append(terms - UNITS)
    return found


def _about(names: list[set[str]], sentence: str, number: str) -> list[set[str]]:
    """The names `number` is said about: those in its own clause ("6 layers" in "X has 6
    layers, and its vectors take 1.5 GB in FAISS" is not about FAISS), else the sentence's
    ("For BGE-M3, the count is 22.7 million" is about BGE-M3)."""
    clause = _clause_terms(sentence, number)
    return [name for name in names if name & clause] or names


def _unbound(
    text: str,
    question: str,
    evidence: list[str],
    read: tuple[str, ...] = (),
    headings: Mapping[str, str] | None = None,
) -> list[str]:
    """The numbers of `text` that no evidence states with what they count; what a number
    counts is read within its own sentence. In the passages a reader model wrote from
    (`read`), a number stated next to the same terms is enough: which question term it
    counts is that model's reading ("IQ2_XXS uses 2.06 bits" from a table row). Either way
    the sentences that state it must name, together, what the answer's sentence says the
    number is about (`_names`), in their words or in the heading of the note section they
    stand in (`headings`: text -> heading): MiniLM's "22.7 million parameters" do not back
    "BGE-M3 has 22.7 million parameters", nor "a 7B model" fine-tuned at 2e-5 "Llama 2 7B
    was pre-trained at 2e-5"."""
    headings = headings or {}
    subjects = {_root(t) for t in tokenize(question) if not NUMBER.fullmatch(t)} - UNITS
    unbound = []
    for sentence in sentences(text):
        names = _names(sentence, question)
        for (n, near), (_, subject) in zip(
            _number_contexts(sentence), _prose_subjects(sentence, subjects), strict=True
        ):
            if _bound(n, near, subject, [], question, subjects):
                continue  # the question states it
            found = [e for e in evidence if _bound(n, near, subject, [e], "", subjects)]
            found += [p for p in read if _placed(n, near, p)]
            found += [t for t in read if t not in found and _row_states(n, sentence, t, subjects)]
            named = set().union(*(_roots(f) | _roots(headings.get(f, "")) for f in found))
            if not found or not all(name & named for name in _about(names, sentence, n)):
                unbound.append(n)
    return unbound


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
    cited = sorted({int(n) for n in _MARKER.findall(text) if int(n) in given})
    bad_markers = [n for n in _MARKER.findall(text) if int(n) not in given]
    text = _MARKER.sub(lambda m: m.group(0) if int(m.group(1)) in given else "", text).strip()
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
    if not {_root(t) for t in new_terms} & support_terms:
        return fail("adds nothing that the evidence says")
    return Verdict(True, "supported", text, _supporting(cited, new_terms, evidence))


def _support(evidence: list[str], question: str) -> set[str]:
    return _roots(" ".join(evidence)) | _roots(question)


def _new_terms(text: str, question: str) -> set[str]:
    return set(tokenize(_MARKER.sub("", text))) - set(tokenize(question))


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
    unbound = _unbound(text, question, evidence, read, headings)
    if unbound:
        return f"numbers the evidence does not state for the same thing: {', '.join(unbound)}"
    support_terms = _support([*evidence, *read], question)
    backing = " ".join([*evidence, *read, question]).lower()
    foreign = sorted(
        t
        for t in _new_terms(text, question)
        if _root(t) not in support_terms
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
    return sum(1 for s in sentences(text) if _WORDS.search(_MARKER.sub("", s)))


def _supporting(cited: list[int], new_terms: set[str], evidence: list[str]) -> list[int]:
    """The cited items that share the answer's new terms; when none does, the item that
    shares the most (so every citation points at text that supports the answer)."""
    roots = {_root(t) for t in new_terms}
    overlap = {n: len(roots & _roots(e)) for n, e in enumerate(evidence, 1)}
    kept = [n for n in cited if overlap[n]]
    return kept or [max(overlap, key=lambda n: (overlap[n], -n))]
