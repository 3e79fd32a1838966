"""Read documents from disk (txt, md, pdf, html), skipping and reporting files that cannot be used.

Each file is read once as bytes: the sha256 of those bytes decides whether an
unchanged file can be skipped before any parsing happens. A document is named by its
resolved path, so the same file reached through a symlink or `..` is one document.
A folder that cannot be listed is reported, and the notes already indexed under it are
still tried one by one, so the rule for an unreadable file holds for them (their chunks stay).
Text is UTF-8 (a BOM is dropped), or UTF-16/UTF-32 when a BOM says so.
"""

import codecs
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from retrieval.html_text import html_to_text

KINDS = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
}
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class Page:
    text: str
    number: int | None  # 1-based pdf page; None for other formats


@dataclass(frozen=True)
class Document:
    source: str  # resolved absolute path: the document's identity in the index
    kind: str
    pages: list[Page]


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str
    unreadable: str | None = None  # why a file that still exists could not be read this time


@dataclass(frozen=True)
class RawFile:
    path: Path
    data: bytes
    sha256: str


def iter_candidates(roots: list[Path], known: Collection[str] = ()) -> Iterator[Path | Skipped]:
    """Each file under the roots once, by its resolved path (a symlink loop stays as it is).
    A folder that cannot be listed comes as a Skipped, followed by the `known` sources under it."""
    seen: set[Path] = set()
    for path in _walk(roots, known):
        if isinstance(path, Skipped):
            yield path
            continue
        real = resolved(path)
        if real not in seen:
            seen.add(real)
            yield real


def resolved(path: Path) -> Path:
    """The path with symlinks and `..` resolved: a document's identity."""
    try:
        return path.resolve()
    except RuntimeError:  # a symlink loop: read_raw reports it
        return path


def _walk(roots: list[Path], known: Collection[str]) -> Iterator[Path | Skipped]:
    """Files under the roots (not following directory symlinks, skipping hidden entries)."""
    for root in roots:
        if not root.is_dir():
            yield root
            continue
        failed: list[OSError] = []  # os.walk reports a folder it cannot list here, then goes on
        for folder, dirs, files in os.walk(root, onerror=failed.append):
            yield from _unlisted(failed, known)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    yield Path(folder) / name
        yield from _unlisted(failed, known)


def _unlisted(failed: list[OSError], known: Collection[str]) -> Iterator[Path | Skipped]:
    """Each folder that could not be listed, then the known sources under it (to be read)."""
    while failed:
        exc = failed.pop(0)
        folder = Path(exc.filename)
        yield Skipped(str(folder), f"unreadable folder: {exc.strerror or exc}")
        yield from sorted(Path(s) for s in known if folder in Path(s).parents)


def read_raw(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> RawFile | Skipped:
    """The file's bytes and hash, or why it cannot be read."""
    if not _utf8_name(path):  # the index stores names as UTF-8 JSON
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        return Skipped(shown, "file name is not valid UTF-8: rename the file")
    if path.suffix.lower() not in KINDS:
        return Skipped(str(path), f"unsupported file type '{path.suffix or path.name}'")
    try:
        data = _read_regular(path, max_bytes)
    except OSError as exc:
        return _unreadable(path, exc)
    if isinstance(data, Skipped):
        return data
    if not data:  # possibly caught mid-rewrite
        return Skipped(str(path), "empty", unreadable="empty")
    if not data.strip():
        return Skipped(str(path), "empty")
    return RawFile(path, data, hashlib.sha256(data).hexdigest())


def _utf8_name(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as surrogate escapes
        return False
    return True


def _kind_of(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
    return next((name for test, name in kinds if test(mode)), "a device")


def _read_regular(path: Path, max_bytes: int) -> bytes | Skipped:
    """At most max_bytes of a regular file. Opened without blocking and checked on the open
    descriptor, so a FIFO named notes.md or a link to /dev/zero is skipped, never read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            return Skipped(str(path), f"not a regular file ({_kind_of(info.st_mode)})")
        if info.st_size > max_bytes:
            return Skipped(str(path), f"too large: {info.st_size} bytes (limit {max_bytes})")
        data = f.read(max_bytes + 1)  # the file may have grown since
    if len(data) > max_bytes:
        return Skipped(str(path), f"too large: over {max_bytes} bytes (limit {max_bytes})")
    return data


def _unreadable(path: Path, exc: OSError) -> Skipped:
    if exc.errno == errno.ELOOP:
        return Skipped(str(path), "symlink loop")
    cause = exc.strerror or str(exc)
    if exc.errno == errno.ENOENT:  # gone (or a dangling symlink): nothing left to keep
        return Skipped(str(path), f"unreadable: {cause}")
    return Skipped(str(path), f"unreadable: {cause}", unreadable=cause)


def parse(raw: RawFile) -> Document | Skipped:
    kind = KINDS[raw.path.suffix.lower()]
    try:
        pages = _pdf_pages(raw.data) if kind == "pdf" else [Page(_decode(raw.data, kind), None)]
    except ValueError as exc:
        return Skipped(str(raw.path), str(exc))
    pages = [p for p in pages if p.text.strip()]
    if not pages:
        return Skipped(str(raw.path), "no text" if kind in ("pdf", "html") else "empty")
    return Document(str(raw.path), kind, pages)


# (BOM, codec, name); the UTF-32 LE BOM starts with the UTF-16 LE one, so it comes first
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)


def _decode(data: bytes, kind: str) -> str:
    utf8 = ("utf-8-sig", "UTF-8")  # drops a UTF-8 BOM; the utf-16/32 codecs drop theirs
    codec, name = next(((c, n) for bom, c, n in _BOMS if data.startswith(bom)), utf8)
    if codec == "utf-8-sig" and b"\x00" in data:
        raise ValueError("binary content")
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid {name} (byte {exc.start})") from None
    if "\x00" in text:
        raise ValueError("binary content")
    return html_to_text(text) if kind == "html" else text


def _pdf_pages(data: bytes) -> list[Page]:
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(BytesIO(data))
        if reader.is_encrypted:
            raise ValueError("encrypted pdf")
        return [Page(p.extract_text() or "", n) for n, p in enumerate(reader.pages, 1)]
    except ValueError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files
        raise ValueError(f"corrupt pdf ({type(exc).__name__})") from None
