"""llama.cpp's own C output, captured: quiet calls, and the line that says why one failed.

llama.cpp writes to file descriptors 1 and 2 from C, below Python's sys.stdout/stderr, and
logs through llama_cpp's Python callback; `captured_native_output` sends all of it to a temp
file for the duration of a call, and `failure_reason` picks the telling line from it.
"""

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO


@contextmanager
def _c_logging() -> Iterator[None]:
    """Let llama.cpp log straight to fd 2 instead of through llama_cpp's Python callback.

    A Ctrl-C that arrives while that callback runs raises inside it, where ctypes prints and
    swallows the KeyboardInterrupt; with no Python running during the call it stays pending
    and is raised as soon as the native call returns.
    """
    import ctypes

    import llama_cpp
    from llama_cpp import _logger

    llama_cpp.llama_log_set(llama_cpp.llama_log_callback(), ctypes.c_void_p(0))  # NULL: C default
    try:
        yield
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


@contextmanager
def captured_native_output() -> Iterator[IO[str]]:
    """Send fds 1 and 2 (llama.cpp's C output) and sys.stdout/stderr to a temp file."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        saved = (os.dup(1), os.dup(2))
        old = (sys.stdout, sys.stderr)
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            sys.stdout = sys.stderr = log
            with _c_logging():
                yield log
        finally:
            sys.stdout, sys.stderr = old
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def failure_reason(log: IO[str]) -> str:
    """The most telling line llama.cpp logged: its error, else its last line."""
    log.flush()
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    errors = [line for line in lines if "failed" in line.lower() or "error" in line.lower()]
    return (errors or lines or ["no message from llama.cpp"])[-1]
