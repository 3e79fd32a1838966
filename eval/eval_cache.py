"""The eval's resumable cache under --out/cache: content hashes, keys and atomic writes.

Every cached result is named by a key: the sha256 of a JSON object that holds what the
result depends on (model file sha256, dataset sha256, index manifest sha256, settings,
CACHE_VERSION and a hash of bitrag's own code, so an upgraded or edited bitrag never reuses
answers or divergences its predecessor computed). A result file appears only once complete
(written to a temp name, then renamed), except the per-conversation answer logs, which are
appended line by line; a half-written last line is ignored when read back.
"""

import hashlib
import json
import os
from functools import cache
from pathlib import Path

from retrieval.hashing import sha256_of

CACHE_VERSION = 1
CODE_PACKAGES = ("agent", "retrieval", "eval")  # what answers and divergences are computed by


def sha256_file(path: Path, memo: Path | None = None) -> str:
    """sha256 of a file; with `memo`, remembered per (path, size, mtime) across runs."""
    stat = path.stat()
    tag = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    known = (read_json(memo) or {}) if memo else {}
    if tag in known:
        return known[tag]
    digest = sha256_of(path)
    if memo:
        known[tag] = digest
        write_json(memo, known)
    return digest


@cache
def code_version() -> str:
    """sha256 over the Python sources of CODE_PACKAGES (relative paths and contents)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def key(**parts) -> str:
    """A short stable name for what a cached result depends on (and the code computing it)."""
    text = json.dumps(
        {"v": CACHE_VERSION, "code": code_version(), **parts}, sort_keys=True, ensure_ascii=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_json(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged cache entry is recomputed


def write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_lines(path: Path) -> list[dict]:
    """The complete JSON lines of an append-only log (a torn last line is dropped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def rewrite_lines(path: Path, rows: list[dict]) -> None:
    """Keep only complete lines, so the next append does not land on a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    os.replace(tmp, path)


def append_line(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
