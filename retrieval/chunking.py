"""Split a document into chunks along markdown headings and paragraphs, with bounded length."""

import re
from dataclasses import dataclass

MAX_CHARS = 1200
OVERLAP = 150
_HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    source: str
    heading: str
    text: str
    start: int
    end: int


def _blocks(text: str) -> list[tuple[int, int]]:
    """Spans of non-blank line runs; a heading line is always a block of its own."""
    spans: list[tuple[int, int]] = []
    start = None
    pos = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if not stripped or _HEADING.match(stripped):
            if start is not None:
                spans.append((start, pos))
                start = None
            if stripped:
                spans.append((pos, pos + len(line.rstrip("\r\n"))))
        elif start is None:
            start = pos
        pos += len(line)
    if start is not None:
        spans.append((start, pos))
    return spans


def _split_long(start: int, end: int) -> list[tuple[int, int]]:
    """Cut a span longer than MAX_CHARS into overlapping windows."""
    if end - start <= MAX_CHARS:
        return [(start, end)]
    step = MAX_CHARS - OVERLAP
    return [(s, min(s + MAX_CHARS, end)) for s in range(start, end - OVERLAP, step)]


def chunk_document(source: str, text: str) -> list[Chunk]:
    """Chunks that never cross a heading and pack whole paragraphs up to MAX_CHARS."""
    path: list[tuple[int, str]] = []
    pieces: list[tuple[str, int, int]] = []
    current: tuple[str, int, int] | None = None
    for start, end in _blocks(text):
        heading = _HEADING.match(text[start:end])
        if heading:
            level = len(heading.group(1))
            path = [h for h in path if h[0] < level] + [(level, heading.group(2))]
            current = None
            continue
        title = " > ".join(h[1] for h in path)
        for s, e in _split_long(start, end):
            if current and current[0] == title and e - current[1] <= MAX_CHARS:
                current = (title, current[1], e)
                pieces[-1] = current
            else:
                current = (title, s, e)
                pieces.append(current)
    return [
        Chunk(f"{source}#{n}", source, title, text[s:e].strip(), s, e)
        for n, (title, s, e) in enumerate(pieces)
    ]
