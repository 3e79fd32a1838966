"""What flows through the agent graph: the state of one conversation and the run context.

`State` is checkpointed per session, so `history` survives a restart; the other
fields describe the current turn and are reset when a new question arrives.
`Context` holds what the nodes use but never change: the index, the model (loaded
on first use), the tools, what the model can read and whether it decides as the reader.
"""

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Literal, TypedDict

from langchain_core.tools import BaseTool

from agent.evidence import Evidence, TermWeights
from agent.routing import Route
from agent.runtime.llm import LLM
from retrieval.store import Hit, Index, Retriever

Mode = Literal["generated", "quoted", "abstained"]


class Turn(TypedDict):
    question: str
    query: str
    answer: str


class State(TypedDict, total=False):
    question: str
    history: Annotated[list[Turn], operator.add]
    route: Route
    query: str
    searched: list[str]
    hits: list[Hit]
    examined: list[str]  # chunk ids whose sentences the first search measured
    evidence: list[Evidence]
    passages: list[Hit]  # what the reader model was shown, numbered from 1
    picked: int  # the passage the reader said states the answer; 0: none (or no reader)
    named: str | None  # the chunk the judge last named this turn, in any round (None: none)
    judged: list[float]  # how likely its reply was each of 0 (none), 1, 2, ... (when known)
    confirmed: dict[str, float]  # how likely the reader said yes to its "draft" / the "quote"
    coverage: float
    similarity: float
    unknown: list[str]
    draft: str
    answer: str
    mode: Mode
    citations: list[dict]
    tool: dict | None
    note: str


@dataclass
class Context:
    index: Index
    load_llm: Callable[[], LLM]  # called once, when a node first needs the model
    weights: TermWeights
    model_languages: frozenset[str] | None  # None: unknown, assume it reads everything
    tools: list[BaseTool] = field(default_factory=list)
    semantic: bool = True  # judge uncovered questions by meaning (loads the e5 embedder)
    reader: bool = False  # the model decides: which passage states the answer, or none
    retriever: Retriever = "hybrid"
    k: int = 5

    @cached_property
    def llm(self) -> LLM:
        """The model, loaded on first use: a quoted or abstained answer never loads it."""
        return self.load_llm()
