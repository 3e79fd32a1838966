"""The language model behind bitrag: llama.cpp in-process, or an OpenAI-compatible server
(agent/runtime/remote.py).

Both backends offer the same small interface (`LLM`): chat, streamed chat,
JSON-schema-constrained chat and token counting. Generation is deterministic:
temperature 0 and a fixed seed. One in-process model serves every caller; a lock
serializes calls (a llama.cpp context cannot decode two sequences at once), so
concurrent requests queue instead of crashing or interleaving. The in-process model also
reads llama.cpp's logits for a one-token choice and its count of evaluated tokens, and may
carry a LoRA adapter (--lora, agent/runtime/adapter.py); a server cannot take one.
"""

import os
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from agent.runtime.adapter import apply_adapter, check_adapter
from agent.runtime.model_file import checked_model
from retrieval.errors import UserError
from retrieval.hashing import sha256_of
from retrieval.threads import threads

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


def response_format(schema: dict | None) -> dict | None:
    return {"type": "json_object", "schema": schema} if schema else None


class LocalLLM:
    """A GGUF model in llama-cpp-python, with a LoRA `adapter` GGUF applied when given; the chat
    template comes from the GGUF metadata."""

    def __init__(self, path: Path, n_ctx: int = N_CTX, adapter: Path | None = None) -> None:
        from llama_cpp import Llama

        if adapter is not None:
            check_adapter(adapter, path)  # before llama.cpp reads a file it may crash on
        self.name = f"{path.name}+{adapter.name}" if adapter else path.name
        self.n_ctx = n_ctx
        self._lock = threading.Lock()
        self.threads = threads()
        try:
            self._llama = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                seed=SEED,
                verbose=False,
            )
        except ValueError:  # llama.cpp says only "Failed to load model from file"
            raise UserError(
                f"llama.cpp cannot load the model file {path} (damaged, or an architecture "
                "it does not know): pass --model PATH to another GGUF"
            ) from None
        if adapter is not None:
            self._adapt(adapter)

    def _adapt(self, adapter: Path) -> None:
        try:
            apply_adapter(self._llama, adapter)
        except UserError:
            self._llama.close()
            raise

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
                response_format=response_format(schema),
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

    def choice(self, messages: Messages, options: list[str]) -> list[float]:
        """How likely the reply opens with each option (each option's first token; they
        must differ there), renormalized over the options: a one-token constrained reply
        that keeps the model's confidence, read from llama.cpp's logits at the reply's
        first position."""
        import numpy as np
        from llama_cpp import llama_get_logits_ith

        ids = [self._llama.tokenize(o.encode("utf-8"), add_bos=False)[0] for o in options]
        if len(set(ids)) != len(ids):
            raise ValueError(f"options share a first token: {options}")
        with self._lock:
            self._fit_threads()
            self._llama.create_chat_completion(messages=messages, **sampling(1, None))
            logits = np.ctypeslib.as_array(
                llama_get_logits_ith(self._llama.ctx, -1), shape=(self._llama.n_vocab(),)
            )[ids].astype(float)
        weights = np.exp(logits - logits.max())
        return (weights / weights.sum()).tolist()

    def evaluated(self) -> tuple[int, int]:
        """Tokens llama.cpp has evaluated since loading: (prompt tokens, generated tokens).
        A prompt's prefix kept from the previous call is not evaluated again, so this is
        what the prompt cache leaves to read."""
        from llama_cpp import llama_perf_context

        perf = llama_perf_context(self._llama.ctx)
        return perf.n_p_eval, perf.n_eval


@lru_cache(maxsize=2)
def _local(path: Path, adapter: Path | None = None, adapter_sha256: str | None = None) -> LocalLLM:
    """One model per (file, adapter file and its sha256): an adapter rewritten in place loads
    anew, and each adapter gets its own copy of the base."""
    return LocalLLM(path, adapter=adapter)


def refuse_server_lora(url: str | None, lora: str | None) -> None:
    """A server's model is its own: an adapter can only go on a model bitrag loads."""
    if url and lora:
        raise UserError(
            f"--lora applies to a local model, not to the server at {url}: load the adapter "
            "in the server, or drop --llm-url (and BITRAG_LLM_URL) to run the model here"
        )


def load_llm(model: str | None = None, url: str | None = None, lora: str | None = None) -> LLM:
    """--llm-url / BITRAG_LLM_URL selects a server; otherwise the checked local model, with the
    LoRA adapter file `lora` applied when given, loaded once per process (see
    agent.runtime.model_file)."""
    url = url or os.environ.get("BITRAG_LLM_URL")
    refuse_server_lora(url, lora)
    if url:
        from agent.runtime.pool import server_llm

        return server_llm(url)  # several comma-separated URLs: a pool (agent/runtime/pool.py)
    path = checked_model(model).path
    if lora is None:
        return _local(path)
    adapter = Path(lora).expanduser().resolve()
    check_adapter(adapter, path)
    return _local(path, adapter, sha256_of(adapter))
