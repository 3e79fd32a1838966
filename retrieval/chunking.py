"""Split a document into chunks along headings, paragraphs and pdf pages, with bounded length.

Chunks never cross a page. Within a section (the text under one heading) paragraphs are
packed up to MAX_CHARS; a longer paragraph is cut at sentence ends (Korean "다." as well
as ". ! ?"), with about OVERLAP characters repeated between consecutive pieces.

Outline-style notes (a heading over every few bullets) would leave fragments, so a section
shorter than FLOOR is packed with its neighbours under the same parent heading while the
packed span stays within MAX_CHARS; its sub-heading lines then stay inside the chunk text.
A chunk still shorter than MIN_CHARS (a lone short section) joins the neighbour it shares
the longest heading path with, even across parents, so no chunk is shorter than MIN_CHARS
unless its whole page is (a joined chunk may pass MAX_CHARS by at most MIN_CHARS).

Every chunk keeps `start`/`end`: the exact span of its page's text (`text` is that span
stripped), and `heading`: the heading path " > "-joined. For a chunk of one section that is
the section's path; for packed sections it is the path they share, and the span starts at
the first packed section's heading line, so no title is lost. `indexed_text(chunk)` is
what BM25 and the embedder see: the heading path, a newline, then the text.

Sizes were chosen on the dev split with `python -m eval.bench.tune_chunking` (MAX_CHARS 600/750/
900/1200 x FLOOR 150/300/600, BM25, MiniLM and e5, dense and hybrid): 900/300 gave the best
BM25 and MiniLM-hybrid answer@5 (0.90, 0.91; 0.87, 0.88 before), e5 dense was flat within
one or two questions across settings (0.77-0.81), so the size limit stayed at 900.
"""

import re
from dataclasses import dataclass

from retrieval.loaders import Document
from retrieval.tokenize import language

MAX_CHARS = 900
OVERLAP = 120
FLOOR = 300
MIN_CHARS = 150
VERSION = 2  # 1: chunks never crossed a heading; 2: short sections packed, MIN_CHARS
PARAMS = {
    "version": VERSION,
    "max_chars": MAX_CHARS,
    "overlap": OVERLAP,
    "floor": FLOOR,
    "min_chars": MIN_CHARS,
}
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
SENTENCE_END = re.compile(r"(?<=[.!?。])\s+")


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    source: str
    heading: str
    page: int | None
    text: str
    start: int  # character offsets into the page's (or document's) text
    end: int
    lang: str  # "ko" when the chunk has Hangul, else "en"


def indexed_text(chunk: Chunk) -> str:
    """The text BM25 terms and embeddings are made from: heading path, then the chunk text."""
    return f"{chunk.heading}\n{chunk.text}" if chunk.heading else chunk.text


Path_ = tuple[tuple[int, str], ...]


@dataclass
class _Section:
    path: Path_  # (level, title) of the heading and its ancestors; () before any heading
    head: int  # offset of the heading line (body start for the text before any heading)
    pieces: list[tuple[int, int]]  # body spans, each at most MAX_CHARS (but for overlap)


@dataclass
class _Span:
    first: int  # index of the section the span starts in
    last: int  # index of the section it ends in
    start: int
    end: int
    whole: bool  # starts at the beginning of its first section's body


def _heading(line: str, kind: str, prev_blank: bool, next_blank: bool) -> tuple[int, str] | None:
    """(level, title) when the line is a heading: markdown '#' lines, or in plain text a
    short line standing alone between blank lines without closing punctuation."""
    stripped = line.strip()
    if m := _MD_HEADING.match(stripped):
        return len(m.group(1)), m.group(2)
    if kind == "text" and prev_blank and next_blank and 0 < len(stripped) <= 60:
        if not stripped.endswith((".", "!", "?", ":", ";", ",", "다")):
            return 2, stripped
    return None


def _blocks(text: str, kind: str) -> list[tuple[int, int, tuple[int, str] | None]]:
    """(start, end, heading) spans: runs of non-blank lines, each heading line on its own."""
    lines = text.splitlines(keepends=True)
    blank = [not line.strip() for line in lines]
    spans: list[tuple[int, int, tuple[int, str] | None]] = []
    start = None
    pos = 0
    for i, line in enumerate(lines):
        prev_blank = i == 0 or blank[i - 1]
        next_blank = i + 1 == len(lines) or blank[i + 1]
        heading = None if blank[i] else _heading(line, kind, prev_blank, next_blank)
        if blank[i] or heading:
            if start is not None:
                spans.append((start, pos, None))
                start = None
            if heading:
                spans.append((pos, pos + len(line.rstrip("\r\n")), heading))
        elif start is None:
            start = pos
        pos += len(line)
    if start is not None:
        spans.append((start, pos, None))
    return spans


def _split_long(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Cut a span longer than MAX_CHARS at sentence ends into overlapping windows."""
    if end - start <= MAX_CHARS:
        return [(start, end)]
    cuts = [start] + [start + m.end() for m in SENTENCE_END.finditer(text[start:end])] + [end]
    windows: list[tuple[int, int]] = []
    s = start
    while s < end:
        fits = [c for c in cuts if s < c <= s + MAX_CHARS]
        e = fits[-1] if fits and fits[-1] > s + MAX_CHARS // 3 else min(s + MAX_CHARS, end)
        windows.append((s, e))
        if e >= end:
            break
        back = [c for c in cuts if e - OVERLAP <= c < e and c > s]
        s = back[0] if back else max(e - OVERLAP, s + 1)
    return windows


def _keep_bare_title(section: _Section, title_end: int, next_level: int) -> None:
    """A heading with no body whose next heading is not below it would be in no chunk's text
    or heading path (a file of heading lines only would give no chunk): its line is its body."""
    if section.path and not section.pieces and section.path[-1][0] >= next_level:
        section.pieces.append((section.head, title_end))


def _sections(text: str, kind: str) -> list[_Section]:
    """The page's sections in order, each with its body packed into pieces of <= MAX_CHARS."""
    sections = [_Section((), 0, [])]
    title_end = 0
    for start, end, heading in _blocks(text, kind):
        if heading:
            _keep_bare_title(sections[-1], title_end, heading[0])
            path = tuple(h for h in sections[-1].path if h[0] < heading[0]) + (heading,)
            sections.append(_Section(path, start, []))
            title_end = end
            continue
        pieces = sections[-1].pieces
        if not sections[-1].path and not pieces:
            sections[-1].head = start
        for s, e in _split_long(text, start, end):
            if pieces and e - pieces[-1][0] <= MAX_CHARS and pieces[-1][1] <= s:
                pieces[-1] = (pieces[-1][0], e)
            else:
                pieces.append((s, e))
    _keep_bare_title(sections[-1], title_end, 0)
    return sections


def _common(paths: list[Path_]) -> Path_:
    common = paths[0]
    for path in paths[1:]:
        n = 0
        while n < min(len(common), len(path)) and common[n] == path[n]:
            n += 1
        common = common[:n]
    return common


def _title(path: Path_) -> str:
    return " > ".join(title for _, title in path)


def _placed(span: _Span, sections: list[_Section]) -> tuple[int, str]:
    """The span's start offset and heading path. One section: its path, the span starts in
    its body. Several, from a section's start: the path they share, and the span starts at
    the heading lines below it, so every title is in the heading or the text. Several,
    from inside a section (its last piece): that section's path, later titles in the text."""
    paths = [sections[i].path for i in range(span.first, span.last + 1)]
    if span.first == span.last or not span.whole:
        return span.start, _title(paths[0])
    common = _common(paths)
    if common == paths[0]:  # the first section is the parent of the rest
        return span.start, _title(common)
    first = span.first
    while (
        first > 0 and not sections[first - 1].pieces and len(sections[first - 1].path) > len(common)
    ):
        first -= 1  # bare heading lines just above belong to the span too
    return sections[first].head, _title(common)


def _packed(sections: list[_Section]) -> list[_Span]:
    """Pieces as spans, short sections packed with their neighbours under the same parent."""
    spans: list[_Span] = []
    for n, section in enumerate(sections):
        for k, (s, e) in enumerate(section.pieces):
            piece = _Span(n, n, s, e, k == 0)
            last = spans[-1] if spans else None
            joinable = (
                last is not None
                and k == 0
                and len(section.pieces) == 1
                and sections[last.last].pieces[-1][1] == last.end  # last ends its section
                and (e - s < FLOOR or _length(last) < FLOOR)
                and e - last.start <= MAX_CHARS
            )
            if joinable:
                parent = len(sections[last.first].path) - 1
                paths = [sections[i].path for i in range(last.first, n + 1)]
                joinable = len(_common(paths)) >= parent
            if joinable:
                last.last, last.end = n, e
            else:
                spans.append(piece)
    return spans


def _length(span: _Span) -> int:
    return span.end - span.start


def _no_fragments(spans: list[_Span], sections: list[_Section], text: str) -> list[_Span]:
    """Join every span shorter than MIN_CHARS to the neighbour sharing most of its heading path."""

    def size(span: _Span) -> int:
        start, _ = _placed(span, sections)
        return len(text[start : span.end].strip())

    sizes = [size(span) for span in spans]
    i = 0
    while i < len(spans) and len(spans) > 1:
        if sizes[i] >= MIN_CHARS:
            i += 1
            continue
        here = sections[spans[i].first].path
        j = max(
            (j for j in (i - 1, i + 1) if 0 <= j < len(spans)),
            key=lambda j: (len(_common([here, sections[spans[j].first].path])), -sizes[j]),
        )
        a, b = sorted((i, j))
        joined = _Span(
            spans[a].first,
            spans[b].last,
            spans[a].start,
            max(spans[a].end, spans[b].end),
            spans[a].whole,
        )
        spans[a : b + 1] = [joined]
        sizes[a : b + 1] = [size(joined)]
        i = a  # the joined span may still be short
    return spans


def chunk_document(doc: Document) -> list[Chunk]:
    chunks: list[Chunk] = []
    for page in doc.pages:
        sections = _sections(page.text, doc.kind)
        spans = _no_fragments(_packed(sections), sections, page.text)
        for span in spans:
            start, heading = _placed(span, sections)
            raw = page.text[start : span.end]
            text = raw.strip()
            if not text:
                continue
            start += len(raw) - len(raw.lstrip())
            end = start + len(text)
            chunk_id = f"{doc.source}#{len(chunks)}"
            lang = language(text)
            chunks.append(Chunk(chunk_id, doc.source, heading, page.number, text, start, end, lang))
    return chunks
