"""The sha256 of a file, read in 1 MiB blocks: the one hash every model, pack and cache check
uses (retrieval's embedder files, agent's GGUF checks, eval's cache keys)."""

import hashlib
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
