"""A server's heavy state (the index, the agent), loaded in a background thread.

The servers answer ``initialize`` and ``tools/list`` at once, while the index is loaded (or, on a
new BITRAG_HOME, built from the sample corpus, which takes a minute or more). A call that needs
the state waits for it up to ``WAIT_S`` seconds, then gets one clear line saying that it is
still being built and to try again. A load that failed is tried again by the next call (another
bitrag process may have held the index's writer lock); the call that saw it fail gets its error.
"""

import sys
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from mcp_servers.errors import ToolArgumentError, one_line
from retrieval.errors import UserError

T = TypeVar("T")
WAIT_S = 30.0  # how long a call waits for the state (hosts give up on a call after 60 s or more)
Note = Callable[[str], None]  # the loader says what it is doing: shown to a call that waits


class StillLoading(ToolArgumentError):
    """The state is not loaded yet; the caller should try again in a few seconds."""


class Loading(Generic[T]):
    """`load(note)` running in a daemon thread, started at once; `get()` waits for its value."""

    def __init__(self, what: str, load: Callable[[Note], T]) -> None:
        self.what = what
        self._load = load
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._stage = "starting"
        self._start()

    def _start(self) -> None:
        self._done.clear()
        self._error, self._stage = None, "starting"
        threading.Thread(target=self._run, name=f"load {self.what}", daemon=True).start()

    def _note(self, stage: str) -> None:
        self._stage = stage

    def _run(self) -> None:
        try:
            self._value = self._load(self._note)
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the next call
            self._error = exc
            print(f"bitrag: {self._message(exc)}", file=sys.stderr, flush=True)
        finally:
            self._done.set()

    def _message(self, exc: BaseException) -> str:
        if isinstance(exc, UserError | ToolArgumentError):
            return one_line(str(exc))
        return one_line(f"loading {self.what} failed: {type(exc).__name__}: {exc}")

    def get(self, wait: float | None = WAIT_S) -> T:
        """The loaded value; raises StillLoading after `wait` seconds (None: wait until done)."""
        self._done.wait(wait)
        with self._lock:
            if not self._done.is_set():  # still loading, or another call just started a new try
                raise StillLoading(
                    f"{self.what} is still being built ({self._stage}); try again in a few seconds"
                )
            error = self._error
            if error is None:
                return self._value  # type: ignore[return-value]
            self._start()  # the first call to see the failure starts the next try
        raise ToolArgumentError(self._message(error))
