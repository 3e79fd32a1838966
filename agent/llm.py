"""The in-process llama.cpp model: loaded once per path, used at temperature 0 with a fixed seed."""

import os
import threading
from functools import lru_cache
from pathlib import Path

from agent.model_file import checked_model

N_CTX = 2048
SEED = 0


class LocalLLM:
    """A GGUF chat model in llama-cpp-python; the chat template comes from the GGUF metadata."""

    def __init__(self, path: Path, n_ctx: int = N_CTX) -> None:
        from llama_cpp import Llama

        self.path = path
        self._lock = threading.Lock()  # one llama context: calls are serialized
        self._llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=os.cpu_count() or 1,
            seed=SEED,
            verbose=False,
        )

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 256) -> str:
        with self._lock:
            out = self._llama.create_chat_completion(
                messages=messages, max_tokens=max_tokens, temperature=0.0, seed=SEED
            )
        return out["choices"][0]["message"]["content"] or ""

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False))


@lru_cache(maxsize=2)
def _load(path: Path) -> LocalLLM:
    return LocalLLM(path)


def load_llm(model: str | None = None) -> LocalLLM:
    """The checked model (see agent.model_file), loaded once per process."""
    return _load(checked_model(model).path)
