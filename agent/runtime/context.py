"""Fit retrieved chunks into the model's context window, counting with the model's tokenizer.

Chunks are kept in rank order while they fit; the rest are dropped, and when not
even the first fits it is cut to what does. Nothing is trimmed silently: the
report says which chunks were dropped or cut and how many prompt tokens remain.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from agent.runtime.llm import LLM, Messages
from retrieval.errors import UserError
from retrieval.store import Hit

TEMPLATE_TOKENS_PER_MESSAGE = 8  # role markers and separators the chat template adds


@dataclass
class ContextReport:
    n_ctx: int
    prompt_tokens: int = 0
    given: int = 0
    dropped: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def count_messages(llm: LLM, messages: Messages) -> int:
    return sum(llm.count_tokens(m["content"]) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages)


def _cut(hit: Hit, keep_ratio: float) -> Hit:
    text = hit.chunk.text
    return replace(hit, chunk=replace(hit.chunk, text=text[: int(len(text) * keep_ratio)]))


def fit(
    llm: LLM,
    build: Callable[[list[Hit]], Messages],
    hits: list[Hit],
    answer_tokens: int,
) -> tuple[Messages, list[Hit], ContextReport]:
    """Messages holding as many of `hits` as fit in n_ctx - answer_tokens, and the report."""
    budget = llm.n_ctx - answer_tokens
    report = ContextReport(llm.n_ctx)
    kept: list[Hit] = []
    for hit in hits:
        if count_messages(llm, build([*kept, hit])) <= budget:
            kept.append(hit)
        elif not kept:
            cut = hit
            while cut.chunk.text and count_messages(llm, build([cut])) > budget:
                cut = _cut(cut, 0.8)
            if cut.chunk.text:
                kept.append(cut)
                report.truncated.append(hit.chunk.chunk_id)
            else:
                report.dropped.append(hit.chunk.chunk_id)
        else:
            report.dropped.append(hit.chunk.chunk_id)
    messages = build(kept)
    report.prompt_tokens = count_messages(llm, messages)
    report.given = len(kept)
    if report.prompt_tokens > budget:
        raise UserError(
            f"the question is too long for the model: it needs {report.prompt_tokens} prompt "
            f"tokens, the context window leaves {budget}"
        )
    return messages, kept, report
