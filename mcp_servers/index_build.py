"""Build a server's default index from the sample corpus in a child process.

A child rather than the server's loading thread: indexing holds the GIL for long stretches
(reading, chunking, tokenizing), and a thread doing it kept ``initialize`` waiting for about 12 s
on a loaded 2-core machine. The child runs at a lower priority, prints its progress on stdout as
lines (``embedding 64 of 332``), and stops when the server exits (or is killed: the child
watches its parent); an ingest stopped midway leaves the index as it was, and its finished
files' embeddings are reused by the next one.

The child: ``python -m mcp_servers.index_build CORPUS INDEX_DIR``.
"""

import atexit
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from retrieval.errors import UserError

NICENESS = 10  # the server answering its clients comes first
_children: list[subprocess.Popen] = []


def ensure_index(directory: Path, corpus: Path | None, note: Callable[[str], None]) -> None:
    """Build the index at `directory` from `corpus` unless it exists (or there is no corpus)."""
    if corpus is None or (directory / "CURRENT").is_file():
        return
    note("indexing the sample corpus")
    command = [sys.executable, "-m", "mcp_servers.index_build", str(corpus), str(directory)]
    with tempfile.TemporaryFile("w+", encoding="utf-8") as errors:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        _children.append(child)
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, child.pid, NICENESS)
        assert child.stdout is not None
        for line in child.stdout:
            note(f"indexing the sample corpus, {line.strip()}")
        if child.wait():
            errors.seek(0)
            lines = errors.read().strip().splitlines() or [f"it exited with {child.returncode}"]
            raise UserError(f"indexing the sample corpus into {directory} failed: {lines[-1]}")


@atexit.register
def _stop_children() -> None:
    for child in _children:
        if child.poll() is None:
            child.terminate()


def main(argv: list[str]) -> int:
    """The child: ingest CORPUS into INDEX_DIR, one progress line per step on stdout."""
    from retrieval.store import ingest

    corpus, directory = (Path(a) for a in argv)
    server = os.getppid()

    def progress(stage: str, done: int, total: int) -> None:
        if os.getppid() != server:  # the server is gone: nobody waits for this index
            raise SystemExit(1)
        print(f"{stage} {done} of {total}", flush=True)

    try:
        ingest([corpus], directory, progress=progress)
    except UserError as exc:
        print(" ".join(str(exc).split()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
