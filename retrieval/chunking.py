"""Split a document into chunks along headings, paragraphs and pdf pages, with bounded length.

Chunks never cross a heading or a page. Paragraphs are packed up to MAX_CHARS;
a longer paragraph is cut at sentence ends (Korean "다." as well as ". ! ?"),
with about OVERLAP characters repeated between consecutive pieces.
"""

import re
from dataclasses import dataclass

from retrieval.loaders import Document
from retrieval.tokenize import language

MAX_CHARS = 900
OVERLAP = 120
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


def chunk_document(doc: Document) -> list[Chunk]:
    chunks: list[Chunk] = []
    for page in doc.pages:
        path: list[tuple[int, str]] = []
        packed: list[tuple[str, int, int]] = []
        for start, end, heading in _blocks(page.text, doc.kind):
            if heading:
                path = [h for h in path if h[0] < heading[0]] + [heading]
                packed.append(("", -1, -1))  # a heading closes the chunk being packed
                continue
            title = " > ".join(h[1] for h in path)
            for s, e in _split_long(page.text, start, end):
                last = packed[-1] if packed else None
                if last and last[1] >= 0 and last[0] == title and e - last[1] <= MAX_CHARS:
                    packed[-1] = (title, last[1], e)
                else:
                    packed.append((title, s, e))
        for title, s, e in packed:
            if s >= 0:
                n = len(chunks)
                text = page.text[s:e].strip()
                chunk_id = f"{doc.source}#{n}"
                lang = language(text)
                chunks.append(Chunk(chunk_id, doc.source, title, page.number, text, s, e, lang))
    return chunks
