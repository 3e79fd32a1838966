"""Size and sha256 checks for the e5 model file, with the hash remembered per file state.

Hashing 71 MB costs a few tenths of a second, so a successful check is recorded
under BITRAG_HOME keyed by path, size, mtime and inode; any change to the file
(a rewrite, a truncation, a touch) forces a fresh hash.
"""

import json
from pathlib import Path

from retrieval.atomic import write_json
from retrieval.errors import UserError
from retrieval.hashing import sha256_of
from retrieval.paths import bitrag_home

FIX = "reinstall it: make setup"


def cache_file() -> Path:
    return bitrag_home() / "cache" / "verified-files.json"


def verified(path: Path, size: int, sha256: str) -> str:
    """The file's sha256 once it is known to match; otherwise a one-line UserError."""
    if not path.is_file():
        raise UserError(f"e5 model file not found: {path}; {FIX}")
    stat = path.stat()
    if stat.st_size != size:
        kind = "truncated" if stat.st_size < size else "changed"
        raise UserError(
            f"e5 model file {path} is {kind}: {stat.st_size} bytes, expected {size}; {FIX}"
        )
    state = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
    if _remembered(path) == {**state, "sha256": sha256}:
        return sha256
    if sha256_of(path) != sha256:
        raise UserError(f"e5 model file {path} is changed: its sha256 does not match; {FIX}")
    _remember(path, {**state, "sha256": sha256})
    return sha256


def _load_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remembered(path: Path) -> dict | None:
    return _load_cache().get(str(path.resolve()))


def _remember(path: Path, record: dict) -> None:
    cache = _load_cache()
    cache[str(path.resolve())] = record
    try:
        write_json(cache_file(), cache)
    except OSError:
        pass  # a read-only home only costs a re-hash next time
