"""bitrag's model as a LangChain chat model, for LangGraph nodes and chains.

A thin BaseChatModel over `agent.runtime.llm.LLM` rather than langchain-community's
ChatLlamaCpp: that class loads its own llama.cpp instance (no sharing, no lock
between concurrent callers), fixes its grammar when constructed, cannot talk to a
remote server, and its package is being sunset. Here one model instance (local or
remote) is shared; `schema=` on a call constrains the output to that JSON schema.
"""

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from agent.runtime.llm import LLM, Messages

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def to_messages(messages: list[BaseMessage]) -> Messages:
    return [{"role": _ROLES.get(m.type, "user"), "content": str(m.content)} for m in messages]


class BitragChatModel(BaseChatModel):
    """Chat over a shared `LLM`; temperature 0 and a fixed seed come from the LLM itself."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: Any  # agent.runtime.llm.LLM (a Protocol, so pydantic cannot check it)
    max_tokens: int = 256

    @property
    def _llm_type(self) -> str:
        return "bitrag-llama-cpp"

    @property
    def _identifying_params(self) -> dict:
        return {"model": self.llm.name, "n_ctx": self.llm.n_ctx, "max_tokens": self.max_tokens}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        llm: LLM = self.llm
        text = llm.chat(to_messages(messages), self.max_tokens, stop, kwargs.get("schema"))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        llm: LLM = self.llm
        for piece in llm.stream(to_messages(messages), self.max_tokens, stop):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
