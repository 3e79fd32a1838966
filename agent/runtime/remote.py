"""An OpenAI-compatible model server as bitrag's `LLM` (agent/runtime/llm.py).

The server (--llm-url / BITRAG_LLM_URL, an http(s) URL) is spoken to with httpx: a
connection must open within CONNECT_TIMEOUT seconds, and each request, streamed or not,
must be done within BITRAG_LLM_TIMEOUT seconds (default DEFAULT_TIMEOUT): a stream that
goes on past them (a server that never sends [DONE]) ends in a one-line error, and a
stream ends after max_tokens text pieces even when the server ignores max_tokens (the
answer is then what arrived, as when a model hits its limit). Refusals, timeouts, error
statuses and replies that are not the expected JSON become one-line UserErrors that name
the server. BITRAG_LLM_API_KEY, if set, is sent as a bearer token. Failures that say the
server is down rather than that the request was wrong (no connection, a timeout, HTTP
502/503/504) are `ServerUnavailable`, so that a pool of servers (agent/runtime/pool.py) can
ask another one.
"""

import json
import math
import operator
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from functools import reduce
from typing import Any, TypeVar

import httpx

from agent.runtime.llm import N_CTX, Messages, response_format, sampling
from retrieval.errors import UserError

CONNECT_TIMEOUT = 5.0  # seconds to open a connection to the server
DEFAULT_TIMEOUT = 120.0  # seconds per server request unless BITRAG_LLM_TIMEOUT says otherwise
TIMEOUT_VARIABLE = "BITRAG_LLM_TIMEOUT"
SNIPPET_CHARS = 80  # how much of an unexpected reply an error message quotes
T = TypeVar("T")
_MISSING = object()
_STARTED = object()  # the server's streamed reply has begun
_END = object()  # the stream is over: [DONE], the server closed it, or max_tokens pieces
DOWN_STATUSES = (502, 503, 504)  # a gateway or a server that cannot serve at all right now


class ServerUnavailable(UserError):
    """The server could not be reached, or did not answer in time: another server may."""


class RemoteLLM:
    """An OpenAI-compatible llama.cpp server (llama_cpp.server or llama-server) at `url`.

    Every failure (refused, timed out, non-2xx, not JSON, missing keys) is a UserError whose
    one-line message names the server."""

    def __init__(self, url: str) -> None:
        self.url = _http_url(url)
        self.timeout = llm_timeout()
        self.name = self.url
        self.n_ctx = N_CTX
        self._who = f"LLM server at {self.url}"
        headers = {}
        if key := os.environ.get("BITRAG_LLM_API_KEY"):
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(self.timeout, connect=CONNECT_TIMEOUT)
        )

    def _body(self, messages: Messages, max_tokens: int, stop: list[str] | None) -> dict:
        return {"messages": messages, **sampling(max_tokens, stop)}

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """Connection and timeout failures as one line naming the server."""
        try:
            yield
        except httpx.ConnectTimeout:
            raise ServerUnavailable(
                f"{self._who} did not accept a connection within {CONNECT_TIMEOUT:g} s"
            ) from None
        except (httpx.TimeoutException, TimeoutError):
            raise ServerUnavailable(
                f"{self._who} did not answer within {self.timeout:g} s ({TIMEOUT_VARIABLE})"
            ) from None
        except httpx.ConnectError as exc:
            raise ServerUnavailable(f"{self._who} is not reachable ({exc})") from None
        except httpx.RequestError as exc:
            raise ServerUnavailable(f"{self._who} failed ({type(exc).__name__}: {exc})") from None

    def _check_status(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        response.read()
        detail = _snippet(response.text) or "(empty body)"
        error = ServerUnavailable if response.status_code in DOWN_STATUSES else UserError
        raise error(f"{self._who} answered HTTP {response.status_code}: {detail}")

    def _json(self, text: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise UserError(
                f"{self._who} answered with something not JSON: {_snippet(text)}"
            ) from None

    def _dig(self, data: Any, keys: tuple[str | int, ...], kind: type | tuple[type, ...]) -> Any:
        """data[k0][k1]..., which must be a `kind`; otherwise a UserError naming the path."""
        try:
            value = reduce(operator.getitem, keys, data)
        except (KeyError, IndexError, TypeError):
            value = _MISSING
        if not isinstance(value, kind):
            path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys)[1:]
            raise UserError(
                f"{self._who} answered JSON without {path}: {_snippet(json.dumps(data))}"
            )
        return value

    def _post_json(self, url: str, body: dict) -> Any:
        """POST and parse the reply, all within the overall timeout."""
        with self._transport_errors():
            response = _within(self.timeout, lambda: self._client.post(url, json=body))
        self._check_status(response)
        return self._json(response.text)

    def chat(
        self,
        messages: Messages,
        max_tokens: int = 256,
        stop: list[str] | None = None,
        schema: dict | None = None,
    ) -> str:
        body = self._body(messages, max_tokens, stop)
        if schema:
            body["response_format"] = response_format(schema)
        reply = self._post_json(f"{self.url}/chat/completions", body)
        return self._dig(reply, ("choices", 0, "message", "content"), (str, type(None))) or ""

    def stream(
        self, messages: Messages, max_tokens: int = 256, stop: list[str] | None = None
    ) -> Iterator[str]:
        """Text pieces from the server's SSE lines, read on a daemon thread so the timeout
        bounds the whole answer; at most max_tokens pieces (one token each from llama.cpp)."""
        body = self._body(messages, max_tokens, stop) | {"stream": True}
        pieces: queue.Queue = queue.Queue()
        halt = threading.Event()
        threading.Thread(target=self._pump, args=(body, pieces, halt), daemon=True).start()
        deadline = time.monotonic() + self.timeout
        started = False
        try:
            while (item := self._next(pieces, deadline, started)) is not _END:
                if item is _STARTED:
                    started = True
                else:
                    yield item
        finally:
            halt.set()  # the reader stops at its next line, also when the caller stops early

    def _pump(self, body: dict, pieces: queue.Queue, halt: threading.Event) -> None:
        """Put the stream's pieces (then _END, or the UserError that ended it) into `pieces`."""
        url = f"{self.url}/chat/completions"
        left = body["max_tokens"]
        try:
            with self._transport_errors(), self._client.stream("POST", url, json=body) as reply:
                self._check_status(reply)
                self._check_event_stream(reply)
                pieces.put(_STARTED)
                for line in reply.iter_lines():
                    if halt.is_set() or line.removeprefix("data:").strip() == "[DONE]":
                        break
                    if piece := self._piece(line):
                        pieces.put(piece)
                        left -= 1
                        if left <= 0:
                            break
        except Exception as exc:  # raised again by the reading side (see _next)
            pieces.put(exc)
        pieces.put(_END)

    def _next(self, pieces: queue.Queue, deadline: float, started: bool) -> object:
        """The next item, or a UserError once the deadline has passed."""
        try:
            item = pieces.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            what = "did not finish its answer" if started else "did not answer"
            raise ServerUnavailable(
                f"{self._who} {what} within {self.timeout:g} s ({TIMEOUT_VARIABLE})"
            ) from None
        if isinstance(item, Exception):
            raise item
        return item

    def _check_event_stream(self, response: httpx.Response) -> None:
        kind = response.headers.get("content-type", "")
        if not kind.startswith("text/event-stream"):
            response.read()
            raise UserError(
                f"{self._who} answered a streamed chat with {kind or 'no content type'},"
                f" not text/event-stream: {_snippet(response.text)}"
            )

    def _piece(self, line: str) -> str | None:
        """The text an SSE line carries, if any."""
        payload = line.removeprefix("data:").strip()
        if not line.startswith("data:") or payload == "[DONE]":
            return None
        delta = self._dig(self._json(payload), ("choices", 0, "delta"), dict)
        return delta.get("content")

    def count_tokens(self, text: str) -> int:
        tokenize = f"{self.url.removesuffix('/v1')}/extras/tokenize"
        return len(self._dig(self._post_json(tokenize, {"input": text}), ("tokens",), list))


def _http_url(url: str) -> str:
    """`url` without a trailing slash, if it is an http(s) URL with a host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise UserError(f"--llm-url (or BITRAG_LLM_URL) must be an http(s) URL, not {url!r}")
    return url.rstrip("/")


def llm_timeout() -> float:
    """Seconds a server request may take: BITRAG_LLM_TIMEOUT, else DEFAULT_TIMEOUT."""
    raw = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise UserError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, not {raw!r}")
    return seconds


def _snippet(text: str) -> str:
    return " ".join(text.split())[:SNIPPET_CHARS]


def _within(seconds: float, work: Callable[[], T]) -> T:
    """work() on a daemon thread, given up with TimeoutError after `seconds` (httpx's read
    timeout is per read, so a server trickling bytes could outlast it). An abandoned thread
    ends at its own read timeout and never keeps the process alive."""
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(work())
        except Exception as exc:
            future.set_exception(exc)

    threading.Thread(target=target, daemon=True).start()
    return future.result(timeout=seconds)
