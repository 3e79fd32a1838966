"""Whether the numbers of an answer are stated, in the evidence or in the passages a reader
read, next to what they count.

A number is bound when some evidence sentence (or the question) states it next to a term
the answer puts beside it, counting the same question term; in the passages a reader model
read, a number beside the same terms is enough, and across languages (a Korean answer from
English notes, or the reverse) a number beside another number or name written the same way
in both. Either way the sentences that state it must name what the answer's sentence says
the number is about. agent/verify.py uses `unbound` to refuse a draft.
"""

import re
from collections.abc import Mapping

from agent.evidence import NUMBER, QUESTION_WORDS, sentences
from retrieval.tokenize import language, tokenize

MARKER = re.compile(r"\[(\d+)\]")
# A number with the scale written against it is one piece: "7B" (a model's size) is not the
# 7 of "7 layers", and "175 billion" is written "175B".
_PIECE = re.compile(r"\d+(?:[.,]\d+)*(?:[BMKTb](?![A-Za-z]))?|[^\W\d_]+")
_SCALED = re.compile(NUMBER.pattern + "[BMKT]?")
SCALES = {"thousand": "K", "million": "M", "billion": "B", "trillion": "T"}
NEAR = 3  # pieces on each side of a number in the answer that say what it counts
EVIDENCE_NEAR = 5  # ... and in the evidence, which states it at more length
SUBJECT_NEAR = 3  # pieces from a number within which the question term it counts stands
# What a number is measured in, never what it counts ("8 bits of exponent" counts exponent).
UNITS = frozenset(
    "bit bits byte bytes b kb mb gb tb kib mib gib tib k m x % percent times".split()
    + "비트 바이트 개 배 번".split()
)
_SUFFIXES = ("ing", "ed", "es", "e", "s")


def root(term: str) -> str:
    """A crude English root, so "stored" matches "stores"; other terms stay as they are."""
    if term.isascii() and term.isalpha() and len(term) > 4:
        for suffix in _SUFFIXES:
            if term.endswith(suffix):
                return term[: -len(suffix)]
    return term


def roots(text: str) -> set[str]:
    return {root(t) for t in tokenize(text)}


def _is_number(piece: str) -> bool:
    return bool(_SCALED.fullmatch(piece))


def _pieces(text: str) -> list[str]:
    """The numbers and words of `text`, a scale word joined to the number before it."""
    found: list[str] = []
    for piece in _PIECE.findall(MARKER.sub(" ", text)):
        piece = piece.replace(",", "")
        if piece.lower() in SCALES and found and NUMBER.fullmatch(found[-1]):
            found[-1] += SCALES[piece.lower()]
        else:
            found.append(piece[:-1] + "B" if piece[-1] == "b" and piece[0].isdigit() else piece)
    return found


def _number_contexts(text: str, near: int = NEAR) -> list[tuple[str, set[str]]]:
    """Each number of `text` with the terms written within `near` pieces of it."""
    pieces = _pieces(text)
    found = []
    for i, piece in enumerate(pieces):
        if _is_number(piece):
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
                found |= {root(t) for t in tokenize(pieces[j])} & subjects
        if found:
            return found
    return set()


def _row_subjects(text: str, subjects: set[str]) -> list[tuple[str, set[str]]] | None:
    """For a table row ("Format: bfloat16, Sign: 1, Exponent: 8"), each number with the
    subject its column header names; None for prose."""
    cells = text.split(", ")
    if len(cells) < 2 or not all(": " in c for c in cells):
        return None
    key = {root(t) for t in tokenize(cells[0].split(": ", 1)[0])} & subjects
    found = []
    for cell in cells:
        header, value = cell.split(": ", 1)
        named = {root(t) for t in tokenize(header)} & subjects | key  # the row is about its key
        found += [(n, named) for n in _pieces(value) if _is_number(n)]
    return found


def _clause_terms(sentence: str, number: str) -> set[str]:
    """The terms of the clauses of `sentence` that state `number` (split at commas,
    semicolons and "and"): what the number is said about, nearest or not."""
    clauses = re.split(r"[,;]|\band\b", sentence)
    return set().union(*(roots(c) for c in clauses if number in _pieces(c)))


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
        numbers = [p for p in _pieces(value) if _is_number(p)]
        if number in numbers and {root(t) for t in tokenize(header)} & said:
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
        if _is_number(p)
    ]


def _glued(text: str) -> list[bool]:
    """For each number of `text`, whether it is part of a name (bfloat16, Q4_K_M, pass@1),
    not a quantity on its own."""
    plain = MARKER.sub(" ", text)
    return [
        m.start() > 0 and (plain[m.start() - 1].isalpha() or plain[m.start() - 1] == "@")
        for m in _PIECE.finditer(plain)
        if _is_number(m.group(0).replace(",", "").upper())
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


def _counted(text: str) -> list[set[str]]:
    """For each number of `text`, the terms of the noun it is written before with the
    counter 개 ("층 하나에 7개 모듈": 모듈, not 층); empty when none."""
    pieces = _pieces(text)
    found = []
    for i, piece in enumerate(pieces):
        if _is_number(piece):
            after = pieces[i + 1 : i + 3]
            counted = len(after) == 2 and after[0] == "개" and not after[1].isascii()
            found.append(set(tokenize(after[1])) if counted else set())
    return found


def _placed(number: str, near: set[str], text: str) -> bool:
    """Whether `text` states `number` next to one of the terms in `near` (any, when empty),
    and, when it writes the number before a noun it counts, that noun is one of them."""
    contexts = _number_contexts(text, EVIDENCE_NEAR)
    return any(
        other == number and (not near or near & around) and (not noun or noun & near)
        for (other, around), noun in zip(contexts, _counted(text), strict=True)
    )


def _anchors(text: str) -> set[str]:
    names = {t for t in tokenize(text) if t.isascii() and not t.isdigit()}
    return names | _numbers(text)


def _numbers(text: str) -> set[str]:
    return {p for p in _pieces(text) if _is_number(p)}


def _across(number: str, sentence: str, text: str) -> bool:
    """Whether `text`, read in another language than the answer's `sentence` (a Korean
    answer from English notes, or the reverse), states `number` beside something else the
    sentence writes the same way in both languages: another number or a Latin-script name
    ("800,000 samples curated with DeepSeek-R1" backs "DeepSeek-R1 ... 800,000개";
    "M = 32면 벡터당 약 256바이트" backs "When M = 32, ... 256 bytes"). No word can stand
    next to the number in both."""
    if language(text) == language(sentence) or number not in _numbers(text):
        return False
    return bool((_anchors(sentence) & _anchors(text)) - {number})


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
        terms = {root(t) for t in tokenize(m.group(0)) if t in said and not NUMBER.fullmatch(t)}
        if terms - UNITS and terms not in found:
            found.append(terms - UNITS)
    return found


def _named(name: set[str], terms: set[str]) -> bool:
    """Whether `terms` name `name`: one of its terms, or a Latin-script identifier holding
    one of at least three letters (IndexHNSWFlat names HNSW)."""
    long = [t for t in name if len(t) >= 3 and t.isascii()]
    return bool(name & terms) or any(t in term for t in long for term in terms if term.isascii())


def _about(names: list[set[str]], sentence: str, number: str) -> list[set[str]]:
    """The names `number` is said about: those in its own clause ("6 layers" in "X has 6
    layers, and its vectors take 1.5 GB in FAISS" is not about FAISS), else the sentence's
    ("For BGE-M3, the count is 22.7 million" is about BGE-M3)."""
    clause = _clause_terms(sentence, number)
    return [name for name in names if name & clause] or names


def unbound(
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
    subjects = {root(t) for t in tokenize(question) if not NUMBER.fullmatch(t)}
    subjects -= UNITS | QUESTION_WORDS  # "쓰는 19비트 형식" counts 형식, never 쓰 (use)
    missing = []
    for sentence in sentences(text):
        names = _names(sentence, question)
        for (n, near), (_, subject) in zip(
            _number_contexts(sentence), _prose_subjects(sentence, subjects), strict=True
        ):
            if _bound(n, near, subject, [], question, subjects):
                continue  # the question states it
            found = [e for e in evidence if _bound(n, near, subject, [e], "", subjects)]
            found += [p for p in read if _placed(n, near, p) or _across(n, sentence, p)]
            found += [t for t in read if t not in found and _row_states(n, sentence, t, subjects)]
            named = set().union(*(roots(f) | roots(headings.get(f, "")) for f in found))
            if not found or not all(_named(name, named) for name in _about(names, sentence, n)):
                missing.append(n)
    return missing
