"""Evidence: the sentences of the retrieved chunks that best answer the question.

Each chunk is split into sentences (Kiwi for Korean text, punctuation and line
breaks otherwise; a table row becomes one sentence that names its columns). A
sentence is scored by the share of the question's term weight it holds, where a
term weighs its BM25 idf in the index and a term the index has never seen weighs
the most (it is what the notes may lack). The sentences around it and the
chunk's heading add context at a lower weight, so
"It stores 4 bits." under "QLoRA" still counts as being about QLoRA.

`coverage` is the grade: how much of the question the best evidence accounts
for. The same weighting decides whether to answer or abstain.
"""

import re
from dataclasses import dataclass

import numpy as np

from retrieval.bm25 import BM25
from retrieval.chunking import SENTENCE_END
from retrieval.store import Hit
from retrieval.tokenize import has_hangul, kiwi, tokenize

MAX_EVIDENCE = 3
NEIGHBOUR_WEIGHT = 0.75  # share of a term's weight earned when only a neighbour/heading holds it
RANK_PRIOR = 0.02  # tie-break towards the better-ranked chunk
MIN_SENTENCE_CHARS = 12
MAX_PASSAGE = 400  # characters of a two-sentence evidence passage
EARLIER_WEIGHT = 0.3  # weight of a follow-up's terms taken from the earlier turn
# Words that ask rather than say what is asked about: they carry no evidence weight.
QUESTION_WORDS = frozenset(
    """many much use used uses called call happen happens give gives take takes get gets
    need needs mean means according note notes say says about regarding
    얼마 얼마나 몇 무엇 뭐 누구 어디 언제 왜 어느 어떤 어떻 하 되 있 없 쓰 나 노트 말 알""".split()
)
NUMBER_BONUS = 0.15  # for a sentence with a new number when the question asks for a quantity
_QUANTITY = re.compile(
    r"\bhow (many|much|long|large|big|fast|often)\b|\bwhat (percentage|fraction|size|value)\b"
    r"|\bwhich year\b|몇|얼마|퍼센트|비율|크기는|배\s*(로|나|를)",
    re.IGNORECASE,
)
_HAS_DIGIT = re.compile(r"\d")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")  # 7, 0.0078125, 4,194,304
_ENDS = frozenset(".!?。:;다요")
WRAPPED_LINE = 50  # a line this long that does not end its sentence was wrapped
_TABLE_RULE = re.compile(r"^\s*\|?[\s:|-]+\|?\s*$")
_MARKUP = re.compile(r"^\s*(?:[-*+>]|#{1,6}|\d+[.)])\s+")


Cells = tuple[tuple[str, str], ...]  # a table row's (column name, cell) pairs; () for prose


@dataclass(frozen=True)
class Evidence:
    quote: str
    source: str
    chunk_id: str
    score: float
    cells: Cells = ()

    def as_dict(self) -> dict:
        return {"quote": self.quote, "source": self.source, "chunk_id": self.chunk_id}


def _clean(sentence: str) -> str:
    return " ".join(_MARKUP.sub("", sentence).split())


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _row_text(cells: Cells) -> str:
    return ", ".join(f"{h}: {c}" if h else c for h, c in cells)


def _table_rows(lines: list[str]) -> list[tuple[str, Cells]]:
    """Each data row of a markdown table as one sentence, "Header: cell, ...", so a row
    carries the column names it needs to be understood on its own, with its cells."""
    header = _cells(lines[0])
    rows = [r for r in lines[1:] if not _TABLE_RULE.match(r)]
    cells = [tuple(zip(header, _cells(r), strict=False)) for r in rows]
    return [(_row_text(c), c) for c in cells]


_UNIT = re.compile(r"\d[\d.,]*\s?([^\W\d_]+)")  # "3.5GB", "3.5 GB", "0.5바이트"
NAMED_HEADER = 0.5  # share of a column name's terms the question must hold to name it


def named_cells(cells: Cells, question: str) -> str | None:
    """A table row cut to its first cell, what the row is about, and the cells whose column
    the question names ("Format: bfloat16, Exponent: 8") or whose value is in a unit it
    asks for ("Memory: about 3.5GB" for "how many GB"); None for prose, a row with a
    headless cell, or a question that names no column, or every one."""
    if len(cells) < 3 or not all(header for header, _ in cells):
        return None
    asked = set(tokenize(question))

    def named(header: str) -> bool:
        terms = set(tokenize(header))
        return bool(terms) and len(terms & asked) >= NAMED_HEADER * len(terms)

    def in_asked_unit(value: str) -> bool:  # "약 3.5GB" for "몇 GB가 필요해?"
        return any(unit.lower() in asked for unit in _UNIT.findall(value))

    kept = tuple(
        (header, value)
        for i, (header, value) in enumerate(cells)
        if i == 0 or named(header) or in_asked_unit(value)
    )
    return _row_text(kept) if 1 < len(kept) < len(cells) else None


def _joins_next(line: str, following: str) -> bool:
    """Whether `following` continues `line`: a lead-in ending in ":", or a hard-wrapped
    line (pdf text) that has not ended its sentence and runs on in lower case."""
    if _MARKUP.match(following) or following.lstrip().startswith("|"):
        return line.rstrip().endswith(":")
    end = line.rstrip()[-1:]
    start = following.lstrip()[:1]
    continues = start.islower() or has_hangul(start)
    return end == ":" or (continues and len(line) >= WRAPPED_LINE and end not in _ENDS)


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    """("table", rows) for runs of table lines, ("text", [line]) for every other line,
    with continued lines joined back; list and heading marks go before sentences are
    split, so "1. 16384 x 8192 = ..." is not cut after its "1."."""
    lines = [line for line in text.splitlines() if line.strip()]
    blocks: list[tuple[str, list[str]]] = []
    joining = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("|"):
            if blocks and blocks[-1][0] == "table":
                blocks[-1][1].append(line)
            else:
                blocks.append(("table", [line]))
        elif joining:
            blocks[-1][1][0] += " " + _clean(line)
        else:
            blocks.append(("text", [_clean(line)]))
        following = lines[i + 1] if i + 1 < len(lines) else ""
        joining = blocks[-1][0] == "text" and bool(following) and _joins_next(line, following)
    return blocks


def units(text: str) -> list[tuple[str, Cells]]:
    """(sentence, its cells when it is a table row, else ()) for each sentence of a chunk,
    Korean-aware; every line stands alone, table rows carry their header."""
    out: list[tuple[str, Cells]] = []
    for kind, lines in _blocks(text):
        if kind == "table":
            out += _table_rows(lines)
            continue
        line = lines[0]
        if has_hangul(line):
            parts = [s.text for s in kiwi().split_into_sents(line)]
        else:
            parts = SENTENCE_END.split(line)
        out += [(c, ()) for c in (_clean(p) for p in parts) if c]
    return out


def sentences(text: str) -> list[str]:
    return [sentence for sentence, _ in units(text)]


class TermWeights:
    """Question-term weights: log(1 + chunks / chunks holding the term), positive even in
    a one-note index (where Okapi idf is negative for every term); a term the index has
    never seen weighs as if half a chunk held it."""

    def __init__(self, bm25: BM25) -> None:
        n = bm25.n_chunks
        weights = np.log1p(n / np.maximum(bm25.document_frequencies(), 1))
        self._weight = dict(zip(bm25.vocab, weights.tolist(), strict=True))
        self._unseen = float(np.log1p(n / 0.5))

    def weight(self, term: str) -> float:
        return self._weight.get(term, self._unseen)

    def known(self, term: str) -> bool:
        return term in self._weight


def _share(question: dict[str, float], terms: set[str]) -> float:
    total = sum(question.values())
    return sum(w for t, w in question.items() if t in terms) / total if total else 0.0


def question_terms(query: str, weights: TermWeights, focus: str | None = None) -> dict[str, float]:
    """Weighted content terms of the query. With `focus` (a follow-up's own words, the
    query also holding the earlier turn), terms outside the focus weigh EARLIER_WEIGHT."""
    own = set(tokenize(focus)) if focus else None
    return {
        t: weights.weight(t) * (1.0 if own is None or t in own else EARLIER_WEIGHT)
        for t in tokenize(query)
        if t not in QUESTION_WORDS
    }


def _score(question: dict[str, float], own: set[str], context: set[str]) -> float:
    """Full weight for terms in the sentence, NEIGHBOUR_WEIGHT for terms only around it."""
    return _share(question, own) + NEIGHBOUR_WEIGHT * _share(question, context - own)


_TWO_ASKS = re.compile(
    r",\s*and\s+(?:how|what|which|who|when|where|why|is|are|was|were|does|did|do|can)\b"
    r"|(?:고|며),\s|\?\s*\S.*\?"
)


def asks_two_things(question: str) -> bool:
    """Whether the question joins two asks ("How big was X, and how many ...?", "X는 뭐고,
    Y는 몇 ...?", two question marks): one sentence rarely answers both."""
    return _TWO_ASKS.search(question) is not None


def wants_number(question: str) -> bool:
    """Whether the question asks for a quantity (how many, 몇, 얼마, ...)."""
    return _QUANTITY.search(question) is not None


def _new_numbers(sentence: str, question: str) -> bool:
    return bool(set(NUMBER.findall(sentence)) - set(NUMBER.findall(question)))


def _candidates(question: str, wanted: dict[str, float], hits: list[Hit]) -> list[Evidence]:
    numeric = wants_number(question)
    found: list[Evidence] = []
    for hit in hits:
        kept = [(s, row) for s, row in units(hit.chunk.text) if len(s) >= MIN_SENTENCE_CHARS]
        parts = [s for s, _ in kept]
        terms = [set(tokenize(s)) for s in parts]
        heading = set(tokenize(hit.chunk.heading))
        leads = _lead_ins(kept, terms)
        for i in range(len(parts)):
            if not terms[i] & wanted.keys() or _leads_in(kept, i):
                continue  # evidence must itself speak of the question, not introduce a table
            around = heading.union(*terms[max(0, i - 1) : i + 2], leads[i])
            score = _score(wanted, terms[i], around) - RANK_PRIOR * hit.rank
            text = passage(kept, i)
            if numeric and _new_numbers(text, question):
                score += NUMBER_BONUS
            chunk = hit.chunk
            found.append(Evidence(text, chunk.source, chunk.chunk_id, score, kept[i][1]))
    return found


def _leads_in(kept: list[tuple[str, Cells]], i: int) -> bool:
    """A lead-in ("For a 7B model:") with the table it introduces next: it states nothing
    itself."""
    following = kept[i + 1][1] if i + 1 < len(kept) else ()
    return not kept[i][1] and bool(following) and kept[i][0].rstrip().endswith(":")


def _lead_ins(kept: list[tuple[str, Cells]], terms: list[set[str]]) -> list[set[str]]:
    """For each table row, the terms of the lead-in that introduces its table (what every
    row is about, "70억(7B) 파라미터 모델 기준:"); empty for other sentences."""
    out: list[set[str]] = []
    lead: set[str] = set()
    for i, (_, row) in enumerate(kept):
        if not row:
            lead = terms[i] if _leads_in(kept, i) else set()
        out.append(lead if row else set())
    return out


def passage(kept: list[tuple[str, Cells]], i: int) -> str:
    """The sentence with the one that follows it in the chunk, when both are prose and short
    enough: notes often name the topic in one sentence and give the fact in the next."""
    sentence, row = kept[i]
    if row or i + 1 == len(kept) or kept[i + 1][1] or _leads_in(kept, i + 1):
        return sentence
    following = kept[i + 1][0]
    return f"{sentence} {following}" if len(sentence) + len(following) < MAX_PASSAGE else sentence


def select(
    query: str,
    hits: list[Hit],
    weights: TermWeights,
    focus: str | None = None,
    k: int = MAX_EVIDENCE,
) -> list[Evidence]:
    """The k best distinct sentences of `hits` for `query`, best first."""
    wanted = question_terms(query, weights, focus)
    ranked = sorted(_candidates(query, wanted, hits), key=lambda e: -e.score)
    chosen: list[Evidence] = []
    for evidence in ranked:
        if not any(overlaps(evidence.quote, e.quote) for e in chosen):
            chosen.append(evidence)
        if len(chosen) == k:
            break
    return chosen


def opening(hit: Hit, k: int = MAX_EVIDENCE) -> list[Evidence]:
    """The first k sentences of a chunk as evidence, for a passage chosen by a reader whose
    sentences share no term with the question (it may be in another language)."""
    kept = [(s, row) for s, row in units(hit.chunk.text) if len(s) >= MIN_SENTENCE_CHARS]
    chunk = hit.chunk
    return [Evidence(s, chunk.source, chunk.chunk_id, 0.0, c) for s, c in kept[:k]] or [
        Evidence(" ".join(chunk.text.split()), chunk.source, chunk.chunk_id, 0.0)
    ]


def overlaps(a: str, b: str) -> bool:
    """Whether two passages share a sentence (one holds the other, or they chain)."""
    return a in b or b in a or bool(set(sentences(a)) & set(sentences(b)))


def unknown_specifics(query: str, weights: TermWeights) -> list[str]:
    """Numbers and codes of the query (3090, 8x7b) that occur nowhere in the notes: the
    notes cannot answer a question about a thing they never name."""
    return [
        t for t in dict.fromkeys(tokenize(query)) if _HAS_DIGIT.search(t) and not weights.known(t)
    ]


def coverage(query: str, hits: list[Hit], weights: TermWeights) -> float:
    """The largest share of the question's term weight one retrieved chunk (with its
    heading) holds: 1.0 when a chunk mentions every term, low when key terms are absent."""
    wanted = question_terms(query, weights)
    best = 0.0
    for hit in hits:
        terms = set(tokenize(hit.chunk.heading)) | set(tokenize(hit.chunk.text))
        best = max(best, _share(wanted, terms))
    return best
