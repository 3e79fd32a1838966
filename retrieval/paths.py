"""Where bitrag keeps its data: BITRAG_HOME, the default index and the bundled sample corpus."""

import os
from pathlib import Path

SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus"


def bitrag_home() -> Path:
    """BITRAG_HOME, else the user data dir ($XDG_DATA_HOME/bitrag or ~/.local/share/bitrag)."""
    if env := os.environ.get("BITRAG_HOME"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(xdg) / "bitrag"


def default_index_dir() -> Path:
    return bitrag_home() / "index"
