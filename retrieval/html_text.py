"""Main text of an HTML page: the <main>/<article> content without navigation, scripts or footers.

Headings come out as markdown heading lines, so chunking keeps the page's structure.
"""

import re
from html.parser import HTMLParser

_SKIP = frozenset(
    {"script", "style", "title", "nav", "footer", "header", "aside", "noscript", "template"}
)
_BLOCK = frozenset(
    {"p", "div", "li", "ul", "ol", "br", "tr", "table", "section", "pre", "blockquote", "dd", "dt"}
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: dict[str, list[str]] = {"all": [], "main": []}
        self.skip_depth = 0
        self.main_depth = 0

    def _emit(self, text: str) -> None:
        self.parts["all"].append(text)
        if self.main_depth:
            self.parts["main"].append(text)

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIP:
            self.skip_depth += 1
        elif tag in ("main", "article"):
            self.main_depth += 1
        if tag in _HEADINGS:
            self._emit("\n\n" + "#" * _HEADINGS[tag] + " ")
        elif tag in _BLOCK:
            self._emit("\n\n" if tag != "li" else "\n- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in ("main", "article"):
            self.main_depth = max(0, self.main_depth - 1)
        if tag in _HEADINGS or tag in _BLOCK:
            self._emit("\n\n" if tag in _HEADINGS or tag != "li" else "")

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self._emit(re.sub(r"\s+", " ", data))


def html_to_text(markup: str) -> str:
    """Readable text of the page's main content (the whole body when there is no <main>)."""
    parser = _Extractor()
    parser.feed(markup)
    parser.close()
    body = parser.parts["main"] or parser.parts["all"]
    lines = (line.strip() for line in "".join(body).splitlines())
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()
