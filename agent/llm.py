"""The language model behind bitrag: llama.cpp in-process, or an OpenAI-compatible server.

Both backends offer the same small interface (`LLM`): chat, streamed chat,
JSON-schema-constrained chat and token counting. Generation is deterministic:
temperature 0 and a fixed seed. One in-process model serves every caller; a lock
serializes calls (a llama.cpp context cannot decode two sequences at once), so
concurrent requests queue instead of crashing or interleaving.
"""

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from agent.model_file import checked_model
from agent.threads import threads
from retrieval.errors import UserError

N_CTX = 2048
SEED = 0
Messages = list[dict[str, str]]


class LLM(Protocol):
    n_ctx: int
    name: str

    def chat(
        self,
        messages: Messages,
        max_tokens: int = 256,
        stop: list[str] | None = None,
        schema: dict | None = None,
    ) -> str: ...

    def stream(
        self, messages: Messages, max_tokens: int = 256, stop: list[str] | None = None
    ) -> Iterator[str]: ...

    def count_tokens(self, text: str) -> int: ...


def sampling(max_tokens: int, stop: list[str] | None) -> dict:
    """Greedy, seeded, no repetition penalty: the same settings for every backend, so the
    in-process model and a server give the same text."""
    return {
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "repeat_penalty": 1.0,
        "seed": SEED,
        "stop": stop or [],
    }


def _response_format(schema: dict | None) -> dict | None:
    return {"type": "json_object", "schema": schema} if schema else None


class LocalLLM:
    """A GGUF model in llama-cpp-python; the chat template comes from the GGUF metadata."""

    def __init__(self, path: Path, n_ctx: int = N_CTX) -> None:
        from llama_cpp import Llama

        self.name = path.name
        self.n_ctx = n_ctx
        self._lock = threading.Lock()
        self.threads = threads()
        self._llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            seed=SEED,
            verbose=False,
        )

    def _fit_threads(self) -> None:
        """Follow the machine's load: fewer threads while other jobs hold cores."""
        wanted = threads()
        if wanted != self.threads:
            from llama_cpp import llama_set_n_threads

            llama_set_n_threads(self._llama.ctx, wanted, wanted)
            self.threads = wanted

    def chat(
        self,
        messages: Messages,
        max_tokens: int = 256,
        stop: list[str] | None = None,
        schema: dict | None = None,
    ) -> str:
        with self._lock:
            self._fit_threads()
            out = self._llama.create_chat_completion(
                messages=messages,
                response_format=_response_format(schema),
                **sampling(max_tokens, stop),
            )
        return out["choices"][0]["message"]["content"] or ""

    def stream(
        self, messages: Messages, max_tokens: int = 256, stop: list[str] | None = None
    ) -> Iterator[str]:
        """Text pieces as they are generated; the model stays locked until the stream ends."""
        with self._lock:
            self._fit_threads()
            for part in self._llama.create_chat_completion(
                messages=messages, stream=True, **sampling(max_tokens, stop)
            ):
                if piece := part["choices"][0]["delta"].get("content"):
                    yield piece

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))


class RemoteLLM:
    """An OpenAI-compatible llama.cpp server (llama_cpp.server or llama-server) at `url`."""

    def __init__(self, url: str, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if key := os.environ.get("BITRAG_LLM_API_KEY"):
            self._headers["Authorization"] = f"Bearer {key}"
        self.name = self.url
        self.n_ctx = N_CTX

    def _post(self, url: str, body: dict):
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers=self._headers,
        )
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"LLM server at {self.url} is not reachable ({reason})") from None

    def _body(self, messages: Messages, max_tokens: int, stop: list[str] | None) -> dict:
        return {"messages": messages, **sampling(max_tokens, stop)}

    def chat(
        self,
        messages: Messages,
        max_tokens: int = 256,
        stop: list[str] | None = None,
        schema: dict | None = None,
    ) -> str:
        body = self._body(messages, max_tokens, stop)
        if schema:
            body["response_format"] = _response_format(schema)
        with self._post(f"{self.url}/chat/completions", body) as response:
            return json.load(response)["choices"][0]["message"]["content"] or ""

    def stream(
        self, messages: Messages, max_tokens: int = 256, stop: list[str] | None = None
    ) -> Iterator[str]:
        body = self._body(messages, max_tokens, stop) | {"stream": True}
        with self._post(f"{self.url}/chat/completions", body) as response:
            for raw in response:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                if piece := json.loads(line[5:])["choices"][0]["delta"].get("content"):
                    yield piece

    def count_tokens(self, text: str) -> int:
        tokenize = f"{self.url.removesuffix('/v1')}/extras/tokenize"
        with self._post(tokenize, {"input": text}) as response:
            return len(json.load(response)["tokens"])


@lru_cache(maxsize=2)
def _local(path: Path) -> LocalLLM:
    return LocalLLM(path)


def load_llm(model: str | None = None, url: str | None = None) -> LLM:
    """--llm-url / BITRAG_LLM_URL selects a server; otherwise the checked local model,
    loaded once per process (see agent.model_file)."""
    url = url or os.environ.get("BITRAG_LLM_URL")
    if url:
        return RemoteLLM(url)
    return _local(checked_model(model).path)
