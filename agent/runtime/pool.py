"""Several OpenAI-compatible model servers as one `LLM` (agent/runtime/llm.py).

`--llm-url` (or BITRAG_LLM_URL) may list servers separated by commas, e.g.
`http://10.0.0.5:8080/v1,http://10.0.0.6:8080/v1`; `server_llm` then returns a `ServerPool`
over one `RemoteLLM` each (one URL stays a plain `RemoteLLM`). Requests take turns over the
servers (round-robin). A server whose request fails because it is down (`ServerUnavailable`:
no connection, a timeout, HTTP 502/503/504) is benched for BENCH_SECONDS and the request is
asked again of the next server; an answer that says the request was wrong (any other error
from a live server) is the request's error, not the server's, and is raised at once. When no
server can answer, the error is one line naming every server and what each last said. The
servers are assumed to run the same model: their replies are interchangeable.
"""

import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from agent.runtime.llm import N_CTX, Messages
from agent.runtime.remote import RemoteLLM, ServerUnavailable
from retrieval.errors import UserError

BENCH_SECONDS = 30.0  # how long a server that was down is skipped while others answer
T = TypeVar("T")


def server_urls(urls: str) -> list[str]:
    """The URLs of a comma-separated list; an empty item or a repeated URL is one line."""
    items = [item.strip() for item in urls.split(",")]
    if not all(items):
        raise UserError(
            f"--llm-url (or BITRAG_LLM_URL) has an empty item in {urls!r}: "
            "give server URLs separated by single commas"
        )
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise UserError(f"--llm-url (or BITRAG_LLM_URL) names {repeated[0]} more than once")
    return items


def server_llm(urls: str) -> "RemoteLLM | ServerPool":
    """One server as a `RemoteLLM`, several as a `ServerPool`."""
    items = server_urls(urls)
    servers = [RemoteLLM(url) for url in items]  # each URL is checked here, one line if bad
    return servers[0] if len(servers) == 1 else ServerPool(servers)


class ServerPool:
    """The `LLM` interface over several servers running the same model: round-robin over
    those not benched, a server that is down benched for BENCH_SECONDS, the request retried
    on the next one. Safe to share between threads.

    `served` counts, per URL, the requests each server answered."""

    def __init__(self, servers: list[RemoteLLM], bench_seconds: float = BENCH_SECONDS) -> None:
        self.servers = servers
        self.bench_seconds = bench_seconds
        self.n_ctx = min((server.n_ctx for server in servers), default=N_CTX)
        self.name = ",".join(server.url for server in servers)
        self.served: dict[str, int] = {server.url: 0 for server in servers}
        self._benched: dict[str, tuple[float, str]] = {}  # url -> (until, what it said)
        self._turn = 0
        self._lock = threading.Lock()

    def benched(self) -> list[str]:
        """The URLs being skipped now."""
        now = time.monotonic()
        with self._lock:
            return [url for url, (until, _) in self._benched.items() if until > now]

    def _order(self) -> list[RemoteLLM]:
        """This request's servers: those not benched, starting at the next in turn; when all
        are benched, the one whose bench ends first, so a pool that was down recovers without
        waiting out the whole bench."""
        now = time.monotonic()
        with self._lock:
            start = self._turn % len(self.servers)
            self._turn += 1
            rotated = self.servers[start:] + self.servers[:start]
            up = [s for s in rotated if self._benched.get(s.url, (0.0, ""))[0] <= now]
            if up:
                return up
            return [min(self.servers, key=lambda s: self._benched[s.url][0])]

    def _bench(self, server: RemoteLLM, error: ServerUnavailable) -> None:
        with self._lock:
            self._benched[server.url] = (time.monotonic() + self.bench_seconds, str(error))

    def _answered(self, server: RemoteLLM) -> None:
        with self._lock:
            self._benched.pop(server.url, None)
            self.served[server.url] += 1

    def _all_down(self) -> UserError:
        """One line naming every server and what it last said."""
        with self._lock:
            said = [self._benched.get(s.url, (0.0, "not tried"))[1] for s in self.servers]
        lines = "; ".join(said)
        return UserError(f"none of the {len(self.servers)} LLM servers answered: {lines}")

    def _ask(self, call: Callable[[RemoteLLM], T]) -> T:
        """call(server) on the servers in turn until one answers."""
        for server in self._order():
            try:
                result = call(server)
            except ServerUnavailable as exc:
                self._bench(server, exc)
                continue
            self._answered(server)
            return result
        raise self._all_down()

    def chat(
        self,
        messages: Messages,
        max_tokens: int = 256,
        stop: list[str] | None = None,
        schema: dict | None = None,
    ) -> str:
        return self._ask(lambda server: server.chat(messages, max_tokens, stop, schema))

    def count_tokens(self, text: str) -> int:
        return self._ask(lambda server: server.count_tokens(text))

    def stream(
        self, messages: Messages, max_tokens: int = 256, stop: list[str] | None = None
    ) -> Iterator[str]:
        """Text pieces from the first server that starts answering. A server that is down
        before its first piece is benched and the next one asked. Once pieces have been
        yielded the answer is never silently restarted on another server (the caller already
        holds part of it): the server is benched and its error propagates as one line (e.g.
        "LLM server at URL failed (RemoteProtocolError: ...)")."""
        for server in self._order():
            pieces = server.stream(messages, max_tokens, stop)
            try:
                first = next(pieces, None)
            except ServerUnavailable as exc:
                self._bench(server, exc)
                continue
            self._answered(server)
            try:
                if first is not None:
                    yield first
                    yield from self._rest(server, pieces)
            finally:
                pieces.close()  # a caller that stops early stops the server's stream too
            return
        raise self._all_down()

    def _rest(self, server: RemoteLLM, pieces: Iterator[str]) -> Iterator[str]:
        try:
            yield from pieces
        except ServerUnavailable as exc:
            self._bench(server, exc)
            raise
