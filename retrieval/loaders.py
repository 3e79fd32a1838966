"""Read documents from disk into text, skipping (and reporting) files that cannot be used."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
MAX_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class Document:
    source: str  # absolute path, the document's identity in the index
    text: str


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def iter_files(paths: list[Path]) -> Iterator[Path]:
    """Files under the given paths with a supported suffix, each once, in a stable order."""
    seen: set[Path] = set()
    for root in paths:
        candidates = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in candidates:
            real = path.resolve()
            if path.suffix.lower() in SUPPORTED_SUFFIXES and real.is_file() and real not in seen:
                seen.add(real)
                yield real


def load_text(path: Path) -> Document | Skipped:
    """A document, or the reason it was skipped (empty, binary, not UTF-8, too big, unreadable)."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return Skipped(str(path), f"larger than {MAX_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        return Skipped(str(path), f"unreadable: {exc.strerror or exc}")
    if b"\x00" in data:
        return Skipped(str(path), "binary content")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return Skipped(str(path), "not valid UTF-8")
    if not text.strip():
        return Skipped(str(path), "empty")
    return Document(str(path), text)
