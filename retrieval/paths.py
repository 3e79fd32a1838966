"""Where bitrag keeps its data: BITRAG_HOME, the default index and the bundled sample corpus."""

import os
from pathlib import Path

from retrieval.errors import UserError

SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus"


def bitrag_home() -> Path:
    """BITRAG_HOME, else the user data dir ($XDG_DATA_HOME/bitrag or ~/.local/share/bitrag);
    a UserError when it, or the nearest part of it that exists, is not a folder."""
    if env := os.environ.get("BITRAG_HOME"):
        home, source = Path(env).expanduser(), "BITRAG_HOME"
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        home, source = Path(xdg) / "bitrag", "the data folder"
    existing = next((p for p in (home, *home.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "is a file" if existing == home else f"cannot be created: {existing} is a file"
        raise UserError(
            f"{source} {home} {what}, not a folder; point BITRAG_HOME at a folder "
            "(a missing one is created)"
        )
    return home


def default_index_dir() -> Path:
    return bitrag_home() / "index"
