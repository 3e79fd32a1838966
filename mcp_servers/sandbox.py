"""Read text files inside one configured root folder, and nothing outside it.

Refused: any path with a ``..`` part, absolute paths outside the root, paths whose symlinks
lead outside the root (the real path must stay under the real root), anything that is not a
regular file (folders, FIFOs, devices), binary files and text that is not UTF-8. At most
``HARD_MAX_BYTES`` are read per call, whatever the caller asks for.
"""

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from mcp_servers.errors import ToolArgumentError

DEFAULT_MAX_BYTES = 64 * 1024
HARD_MAX_BYTES = 1024 * 1024
MAX_LISTED = 500


@dataclass(frozen=True)
class SandboxRoot:
    """A folder that tools may read from; None-like when not configured."""

    root: Path | None

    @classmethod
    def of(cls, root: Path | None) -> "SandboxRoot":
        if root is None:
            return cls(None)
        real = root.expanduser().resolve()
        if not real.is_dir():
            raise ToolArgumentError(f"the root {root} is not a folder")
        return cls(real)

    def _root(self) -> Path:
        if self.root is None:
            raise ToolArgumentError(
                "file reading is off on this server: start it with --root DIR to allow it"
            )
        return self.root

    def resolve(self, path: str) -> Path:
        """The real path of `path` (relative to the root, or absolute inside it)."""
        root = self._root()
        if not path or not path.strip():
            raise ToolArgumentError("the path is empty")
        if "\x00" in path:
            raise ToolArgumentError("the path contains a NUL character")
        if ".." in PurePath(path).parts:
            raise ToolArgumentError(f"'..' is not allowed in paths: {path}")
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = root / candidate
        real = candidate.resolve()  # follows every symlink
        if real != root and root not in real.parents:
            raise ToolArgumentError(f"{path} is outside the allowed folder {root}")
        return real

    def read_text(self, path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
        if not 1 <= max_bytes <= HARD_MAX_BYTES:
            raise ToolArgumentError(f"max_bytes must be between 1 and {HARD_MAX_BYTES}")
        real = self.resolve(path)
        data, size = _read_regular(real, max_bytes)
        if b"\x00" in data:
            raise ToolArgumentError(f"{path} is a binary file, not text")
        truncated = size > len(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not truncated or exc.start < len(data) - 3:  # a cut multi-byte character is fine
                raise ToolArgumentError(f"{path} is not UTF-8 text") from None
            text = data[: exc.start].decode("utf-8")
        return {
            "path": str(real.relative_to(self._root())),
            "bytes": size,
            "truncated": truncated,
            "text": text,
        }

    def list_files(self, folder: str = ".") -> dict[str, Any]:
        real = self.resolve(folder)
        if not real.is_dir():
            raise ToolArgumentError(f"{folder} is not a folder")
        root = self._root()
        entries = []
        for child in sorted(real.iterdir())[:MAX_LISTED]:
            kind = "folder" if child.is_dir() else "file" if child.is_file() else "other"
            entries.append({"path": str(child.relative_to(root)), "kind": kind})
        return {"folder": str(real.relative_to(root)), "entries": entries}


def _read_regular(real: Path, max_bytes: int) -> tuple[bytes, int]:
    """Up to max_bytes of a regular file (no blocking on FIFOs, no following a swapped link)."""
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ToolArgumentError(f"no such file: {real.name}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ToolArgumentError(f"{real.name} changed into a symlink; refused") from None
        raise ToolArgumentError(f"cannot open {real.name}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ToolArgumentError(f"{real.name} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        return f.read(max_bytes), info.st_size
