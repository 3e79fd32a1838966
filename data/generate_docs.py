#!/usr/bin/env python3
"""Render the generated sample documents of the bitrag corpus.

Sources live in data/generated_src/ as simple markdown-like text:

    # Title            (one per document)
    ## Section         (section heading)
    - item             (bullet list item)
    1. item            (numbered list item)
    other lines        (paragraph text; paragraphs are separated by blank lines)

Outputs go to data/corpus/:

    knowledge-distillation-notes.pdf, quantization-ladder-report.pdf  (PDF 1.4)
    mcp-security-checklist.html, 양자화-용어집.html                   (HTML5)

Only the Python standard library is used. The PDF writer is a minimal one:
standard Type1 fonts Helvetica and Helvetica-Bold with WinAnsiEncoding, A4
pages, greedy word wrapping using the Adobe font metrics, uncompressed content
streams and an exact xref table. PDF text must be Latin-1; any other character
is an error. Output is deterministic: no timestamps, no /ID.

Run from the repository root:  python data/generate_docs.py
"""

from __future__ import annotations

import html
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC_DIR = HERE / "generated_src"
OUT_DIR = HERE / "corpus"

# (source stem, output file name, language)
PDF_DOCS = [
    ("knowledge-distillation-notes", "knowledge-distillation-notes.pdf", "en"),
    ("quantization-ladder-report", "quantization-ladder-report.pdf", "en"),
]
HTML_DOCS = [
    ("mcp-security-checklist", "mcp-security-checklist.html", "en"),
    ("양자화-용어집", "양자화-용어집.html", "ko"),
]


class GenerateError(Exception):
    """Raised for any problem that must stop generation."""


# --------------------------------------------------------------------------
# Source parsing
# --------------------------------------------------------------------------


@dataclass
class Block:
    kind: str  # "h1", "h2", "p", "ul", "ol"
    text: str = ""
    items: list[str] | None = None


_UL_RE = re.compile(r"^- +(.*)$")
_OL_RE = re.compile(r"^(\d+)\. +(.*)$")


def parse_source(text: str) -> list[Block]:
    """Split markdown-like text into headings, paragraphs and lists."""
    blocks: list[Block] = []
    para: list[str] = []
    current_list: Block | None = None

    def flush_para() -> None:
        if para:
            blocks.append(Block("p", " ".join(para)))
            para.clear()

    def flush_list() -> None:
        nonlocal current_list
        if current_list is not None:
            blocks.append(current_list)
            current_list = None

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            flush_para()
            flush_list()
            continue
        if line.startswith("## "):
            flush_para()
            flush_list()
            blocks.append(Block("h2", line[3:].strip()))
            continue
        if line.startswith("# "):
            flush_para()
            flush_list()
            blocks.append(Block("h1", line[2:].strip()))
            continue
        m_ul = _UL_RE.match(line)
        m_ol = _OL_RE.match(line)
        if m_ul or m_ol:
            flush_para()
            kind = "ul" if m_ul else "ol"
            item = (m_ul or m_ol).groups()[-1].strip()
            if current_list is None or current_list.kind != kind:
                flush_list()
                current_list = Block(kind, items=[])
            assert current_list.items is not None
            current_list.items.append(item)
            continue
        if current_list is not None and current_list.items:
            # continuation line of the previous list item
            current_list.items[-1] += " " + line
            continue
        para.append(line)
    flush_para()
    flush_list()

    if not blocks or blocks[0].kind != "h1":
        raise GenerateError("source must start with a '# ' title line")
    if sum(1 for b in blocks if b.kind == "h1") != 1:
        raise GenerateError("source must have exactly one '# ' title line")
    return blocks


# --------------------------------------------------------------------------
# Minimal PDF writer
# --------------------------------------------------------------------------

# Advance widths (1/1000 em) from the Adobe AFM files, for codes 32..126.
# fmt: off
_HELVETICA_WIDTHS = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,  # 32-47
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,  # 48-63
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,  # 64-79
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,  # 80-95
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,  # 96-111
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,  # 112-126
]
_HELVETICA_BOLD_WIDTHS = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278,  # 32-47
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611,  # 48-63
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778,  # 64-79
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556,  # 80-95
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611,  # 96-111
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,  # 112-126
]
# fmt: on
assert len(_HELVETICA_WIDTHS) == len(_HELVETICA_BOLD_WIDTHS) == 95
# Latin-1 letters above 126 are rare in the sources; assume the widest glyph so
# that wrapping can only err on the safe side.
_FALLBACK_WIDTH = 1000

FONT_REGULAR = "F1"
FONT_BOLD = "F2"
_WIDTHS = {FONT_REGULAR: _HELVETICA_WIDTHS, FONT_BOLD: _HELVETICA_BOLD_WIDTHS}

PAGE_W, PAGE_H = 595, 842  # A4 in points (rounded)
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 72, 72, 72
TEXT_W = PAGE_W - 2 * MARGIN_X

# kind -> (font, size, leading, space before, space after)
STYLES = {
    "h1": (FONT_BOLD, 18.0, 22.0, 0.0, 10.0),
    "h2": (FONT_BOLD, 13.0, 16.0, 10.0, 4.0),
    "p": (FONT_REGULAR, 10.5, 14.0, 0.0, 7.0),
    "li": (FONT_REGULAR, 10.5, 14.0, 0.0, 3.0),
}
LIST_INDENT = 18.0


def check_latin1(text: str, where: str) -> None:
    """Fail loudly on anything WinAnsiEncoding cannot show as Latin-1."""
    for i, ch in enumerate(text):
        code = ord(ch)
        if code < 32 or 127 <= code < 160 or code > 255:
            raise GenerateError(
                f"{where}: character {ch!r} (U+{code:04X}) at position {i} "
                "cannot be written to a Latin-1/WinAnsi PDF; PDFs are English-only"
            )


def text_width(text: str, font: str, size: float) -> float:
    widths = _WIDTHS[font]
    units = 0
    for ch in text:
        code = ord(ch)
        units += widths[code - 32] if 32 <= code <= 126 else _FALLBACK_WIDTH
    return units * size / 1000.0


def wrap(text: str, font: str, size: float, max_width: float) -> list[str]:
    """Greedy word wrap. Words wider than a line are split by characters."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = word if not current else current + " " + word
        if text_width(candidate, font, size) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
            current = ""
        while text_width(word, font, size) > max_width:
            cut = len(word)
            while cut > 1 and text_width(word[:cut], font, size) > max_width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    return lines


def pdf_string(text: str) -> bytes:
    """Encode as a PDF literal string: escape \\ ( ) and use octal for non-ASCII."""
    out = bytearray(b"(")
    for byte in text.encode("latin-1"):
        if byte in (0x5C, 0x28, 0x29):  # \ ( )
            out += b"\\" + bytes([byte])
        elif 32 <= byte <= 126:
            out.append(byte)
        else:
            out += b"\\%03o" % byte
    out += b")"
    return bytes(out)


def fmt(x: float) -> str:
    return f"{x:.2f}"


@dataclass
class TextLine:
    font: str
    size: float
    x: float
    y: float
    text: str


def layout(blocks: list[Block]) -> list[list[TextLine]]:
    """Place every line on A4 pages; returns the lines of each page."""
    pages: list[list[TextLine]] = [[]]
    top = PAGE_H - MARGIN_TOP
    y = top  # baseline of the previous line (or top of page)

    def new_page() -> None:
        nonlocal y
        pages.append([])
        y = top

    def place(
        lines: list[str], kind: str, x: float, first_prefix: str = "", keep_lines: int = 1
    ) -> None:
        nonlocal y
        font, size, leading, before, after = STYLES[kind]
        if y != top:
            y -= before
        # keep a heading together with the start of what follows it
        needed = leading * max(keep_lines, 1)
        if y - needed < MARGIN_BOTTOM and y != top:
            new_page()
        for i, line in enumerate(lines):
            if y - leading < MARGIN_BOTTOM:
                new_page()
            y -= leading
            if i == 0 and first_prefix:
                pages[-1].append(TextLine(font, size, x - LIST_INDENT, y, first_prefix))
            pages[-1].append(TextLine(font, size, x, y, line))
        y -= after

    for block in blocks:
        if block.kind in ("h1", "h2"):
            font, size, *_ = STYLES[block.kind]
            lines = wrap(block.text, font, size, TEXT_W)
            # heading + its own lines + two body lines must fit
            place(lines, block.kind, MARGIN_X, keep_lines=len(lines) + 3)
        elif block.kind == "p":
            font, size, *_ = STYLES["p"]
            place(wrap(block.text, font, size, TEXT_W), "p", MARGIN_X)
        else:
            font, size, *_ = STYLES["li"]
            assert block.items is not None
            for n, item in enumerate(block.items, start=1):
                prefix = "-" if block.kind == "ul" else f"{n}."
                lines = wrap(item, font, size, TEXT_W - LIST_INDENT)
                place(lines, "li", MARGIN_X + LIST_INDENT, first_prefix=prefix)
            y -= STYLES["p"][4] - STYLES["li"][4]
    if not pages[-1]:
        pages.pop()
    return pages


def content_stream(lines: list[TextLine]) -> bytes:
    parts = []
    for ln in lines:
        parts.append(
            b"BT /%s %s Tf 1 0 0 1 %s %s Tm %s Tj ET"
            % (
                ln.font.encode(),
                fmt(ln.size).encode(),
                fmt(ln.x).encode(),
                fmt(ln.y).encode(),
                pdf_string(ln.text),
            )
        )
    return b"\n".join(parts) + b"\n"


def build_pdf(blocks: list[Block], where: str) -> bytes:
    for b in blocks:
        for piece in [b.text] + (b.items or []):
            check_latin1(piece, where)
    title = blocks[0].text
    pages = layout(blocks)

    # Object numbering: 1 catalog, 2 pages, 3 Helvetica, 4 Helvetica-Bold,
    # 5 info, then (page, content) pairs.
    n_pages = len(pages)
    page_ids = [6 + 2 * i for i in range(n_pages)]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (b" ".join(b"%d 0 R" % pid for pid in page_ids), n_pages),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        4: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold"
        b" /Encoding /WinAnsiEncoding >>",
        5: b"<< /Title %s /Producer (bitrag data/generate_docs.py) >>" % pdf_string(title),
    }
    for pid, lines in zip(page_ids, pages, strict=True):
        stream = content_stream(lines)
        objects[pid] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d]"
            b" /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >>"
            b" /Contents %d 0 R >>" % (PAGE_W, PAGE_H, pid + 1)
        )
        objects[pid + 1] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream"

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    size = max(objects) + 1
    xref_at = len(out)
    out += b"xref\n0 %d\n" % size
    out += b"0000000000 65535 f \n"
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num]
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\n" % size
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


# --------------------------------------------------------------------------
# HTML writer
# --------------------------------------------------------------------------

_NAV = {
    "en": [
        ("Home", "index.html"),
        ("Notes", "notes.html"),
        ("Checklists", "checklists.html"),
        ("About", "about.html"),
    ],
    "ko": [
        ("홈", "index.html"),
        ("노트", "notes.html"),
        ("용어집", "glossary.html"),
        ("소개", "about.html"),
    ],
}
_FOOTER = {
    "en": "Personal study notes. Last reviewed by the author; not legal or security advice. "
    "Contact the site owner to report errors.",
    "ko": "개인 공부 노트입니다. 틀린 내용이 있으면 사이트 운영자에게 알려 주세요.",
}
_SITE = {"en": "Study Notes", "ko": "공부 노트"}

_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:46rem;margin:0 auto;"
    "padding:0 1rem;line-height:1.6;color:#222}"
    "nav ul{list-style:none;padding:0;display:flex;gap:1rem}"
    "footer{border-top:1px solid #ccc;margin-top:3rem;font-size:.85rem;color:#666}"
)


def build_html(blocks: list[Block], lang: str) -> str:
    esc = html.escape
    title = blocks[0].text
    nav = "\n".join(
        f'      <li><a href="{esc(href)}">{esc(label)}</a></li>' for label, href in _NAV[lang]
    )
    body: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            body.append(f"      <h1>{esc(b.text)}</h1>")
        elif b.kind == "h2":
            body.append(f"      <h2>{esc(b.text)}</h2>")
        elif b.kind == "p":
            body.append(f"      <p>{esc(b.text)}</p>")
        else:
            assert b.items is not None
            tag = b.kind
            body.append(f"      <{tag}>")
            body.extend(f"        <li>{esc(item)}</li>" for item in b.items)
            body.append(f"      </{tag}>")
    article = "\n".join(body)
    return f"""<!doctype html>
<html lang="{lang}">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{esc(title)} | {esc(_SITE[lang])}</title>
  <style>{_CSS}</style>
</head>
<body>
  <header>
    <p class="site-name"><a href="index.html">{esc(_SITE[lang])}</a></p>
    <nav>
    <ul>
{nav}
    </ul>
    </nav>
  </header>
  <main>
    <article>
{article}
    </article>
  </main>
  <footer>
    <p>{esc(_FOOTER[lang])}</p>
  </footer>
</body>
</html>
"""


# --------------------------------------------------------------------------


def read_source(stem: str) -> list[Block]:
    path = SRC_DIR / f"{stem}.md"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise GenerateError(f"missing source {path}") from exc
    try:
        return parse_source(text)
    except GenerateError as exc:
        raise GenerateError(f"{path}: {exc}") from exc


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    try:
        rendered: list[tuple[Path, bytes]] = []
        for stem, out_name, _lang in PDF_DOCS:
            blocks = read_source(stem)
            rendered.append((OUT_DIR / out_name, build_pdf(blocks, f"{stem}.md")))
        for stem, out_name, lang in HTML_DOCS:
            blocks = read_source(stem)
            rendered.append((OUT_DIR / out_name, build_html(blocks, lang).encode("utf-8")))
    except GenerateError as exc:
        print(f"generate_docs: error: {exc}", file=sys.stderr)
        return 1
    # write only after everything rendered, so a failure leaves no partial set
    for path, data in rendered:
        path.write_bytes(data)
        print(f"wrote {path.relative_to(HERE.parent)} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
