"""The agent graph, assembled in one place, and `Agent`, which runs one turn of it.

    start -> retrieve -> judge -> pick -> write -> check -> remember    (a model that reads)
                 ^         |-> rewrite (once) -> retrieve   |-> rewrite (once), abstain
                 |                 (from write when its draft says "not stated", from check
                 |                  when neither the draft nor a quote was backed)
                 |-> select_evidence -> grade -> generate -> check -> remember
                 ^                             |-> rewrite (once) -> retrieve
                 |                             |-> quote_unreadable / abstain -> remember
    start -> use_tool | chat -> remember

When the model reads the question's language and `Context.reader` is on, the model
decides: it names the passage that states the answer, or none (then the search is
rewritten once, then the turn abstains); `check` keeps its draft when the evidence backs it
and the model confirms it, else quotes (after a draft the evidence did not back, only when
the cut-off backs the quote and the model confirms it); a turn it refuses reads once more,
deeper, over passages not read yet, before it abstains.
Otherwise similarity cut-offs decide (`grade`).

Conversations are checkpointed by LangGraph (SQLite under BITRAG_HOME for a
named session), so follow-ups resolve against earlier turns, also after a restart.
"""

import time
from collections.abc import Callable
from typing import Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agent import nodes, reader, semantic
from agent.render import label_sources
from agent.state import Context, State
from retrieval.tokenize import language

Grade = Literal["generate", "quote_unreadable", "rewrite", "abstain"]
Judged = Literal["pick", "rewrite", "abstain"]


def after_start(state: State) -> Literal["retrieve", "use_tool", "chat"]:
    return {"docs": "retrieve", "tool": "use_tool", "chat": "chat"}[state["route"]]


def after_retrieve(state: State, runtime: Runtime[Context]) -> Literal["judge", "select_evidence"]:
    """The reader judges when it reads the question; a question naming a number or code the
    notes never mention goes the cut-off way, which abstains without loading the model."""
    ctx = runtime.context
    languages = ctx.model_languages
    reads = languages is None or language(state["question"]) in languages
    judged = ctx.reader and reads and state["hits"] and not state["unknown"]
    return "judge" if judged else "select_evidence"


def _once_more(state: State) -> Literal["rewrite", "abstain"]:
    """A reader turn that found nothing searches once more, deeper, then abstains."""
    return "rewrite" if len(state["searched"]) < 2 else "abstain"


def after_judge(state: State) -> Judged:
    return "pick" if state["picked"] else _once_more(state)


def after_write(state: State) -> Literal["check", "rewrite", "abstain"]:
    """A draft that says the notes do not state the answer is taken at its word: the
    search is rewritten once (deeper, over passages not read yet), then the turn abstains."""
    return _once_more(state) if reader.declined(state["draft"]) else "check"


def after_check(state: State) -> Literal["rewrite", "remember"]:
    """A reader turn the check refused (neither the draft nor a quote backed) reads once
    more, deeper, over passages it has not read, before it abstains: retrieval's fourth and
    fifth passages and the rewritten search's, where the first three did not state it."""
    again = state["mode"] == "abstained" and state["passages"] and len(state["searched"]) < 2
    return "rewrite" if again else "remember"


def grade(state: State, runtime: Runtime[Context]) -> Grade:
    """Answer when a retrieved sentence is close in meaning to the question (without the
    meaning check: when the evidence covers its terms); else search once more, then abstain."""
    if runtime.context.semantic:
        supported = state["similarity"] >= semantic.MIN_SIMILARITY
    else:
        supported = state["coverage"] >= nodes.MIN_COVERAGE
    if state["evidence"] and supported:
        return "generate" if nodes.readable(state, runtime) else "quote_unreadable"
    # a rewrite cannot find what the notes never name
    return "rewrite" if len(state["searched"]) < 2 and not state["unknown"] else "abstain"


def build_graph(checkpointer: BaseCheckpointSaver | None = None):
    graph = StateGraph(State, context_schema=Context)
    for node in (
        nodes.start,
        nodes.retrieve,
        nodes.select_evidence,
        nodes.judge,
        nodes.pick,
        nodes.write,
        nodes.rewrite,
        nodes.generate,
        nodes.check,
        nodes.quote_unreadable,
        nodes.abstain,
        nodes.use_tool,
        nodes.chat,
        nodes.remember,
    ):
        graph.add_node(node.__name__, node)
    graph.add_edge(START, "start")
    graph.add_conditional_edges("start", after_start)
    graph.add_conditional_edges("retrieve", after_retrieve)
    graph.add_conditional_edges("judge", after_judge)
    graph.add_edge("pick", "write")
    graph.add_conditional_edges("write", after_write)
    graph.add_conditional_edges("select_evidence", grade)
    graph.add_edge("rewrite", "retrieve")
    graph.add_edge("generate", "check")
    graph.add_conditional_edges("check", after_check)
    for last in ("quote_unreadable", "abstain", "use_tool", "chat"):
        graph.add_edge(last, "remember")
    graph.add_edge("remember", END)
    return graph.compile(checkpointer=checkpointer)


def mermaid() -> str:
    return build_graph().get_graph().draw_mermaid()


class Agent:
    """One compiled graph over one context; `ask` runs a turn in a session (thread)."""

    def __init__(self, context: Context, checkpointer: BaseCheckpointSaver | None = None):
        self.context = context
        self.graph = build_graph(checkpointer)
        self._stateful = checkpointer is not None

    def ask(
        self,
        question: str,
        session: str = "default",
        on_token: Callable[[str], None] | None = None,
        on_evidence: Callable[[list[dict]], None] | None = None,
    ) -> dict:
        """The DESIGN.md `ask` shape for one turn; `on_token` receives the streamed draft and
        `on_evidence` the evidence the model is about to write from, before its first token."""
        config = {"configurable": {"thread_id": session}} if self._stateful else None
        timings: dict[str, float] = {}
        state: State = {}
        begin = last = time.perf_counter()
        stream = self.graph.stream(
            {"question": question},
            config,
            context=self.context,
            stream_mode=["updates", "custom"],
        )
        for kind, data in stream:
            if kind == "custom":
                if "token" in data and on_token:
                    on_token(data["token"])
                if "evidence" in data and on_evidence:
                    shown = {"evidence": data["evidence"], "citations": []}
                    on_evidence(label_sources(shown, self.context.index.root)["evidence"])
                continue
            now = time.perf_counter()
            for node, update in data.items():
                timings[f"{node}_s"] = timings.get(f"{node}_s", 0.0) + now - last
                state |= update or {}
            last = now
        timings["total_s"] = time.perf_counter() - begin
        return label_sources(result(state, timings), self.context.index.root)


def result(state: State, timings: dict[str, float]) -> dict:
    mode = state["mode"]
    return {
        "answer": state["answer"],
        "mode": mode,
        "evidence": [e.as_dict() for e in state.get("evidence") or []],
        "citations": state.get("citations") or [],
        "abstained": mode == "abstained",
        "route": state.get("route"),
        "query": state.get("query"),
        "searched": state.get("searched") or [],
        "coverage": round(state.get("coverage") or 0.0, 4),
        "similarity": round(state.get("similarity") or 0.0, 4),
        "reader": _reader(state),
        "tool": state.get("tool"),
        "note": state.get("note") or "",
        "draft": state.get("draft") or "",
        "timings": timings,
    }


def _reader(state: State) -> dict | None:
    """What the reader model decided: the chunks it read (over both searches), the one its
    judge last named (None: it named none) and the one it answered from (None: it abstained,
    also after naming one, when the check refused the draft and the quote); None when
    cut-offs decided."""
    shown = state.get("passages") or []
    if not shown:
        return None
    current = [h.chunk.chunk_id for h in shown]
    before = [c for c in state.get("examined") or [] if c not in current]
    picked = 0 if state.get("mode") == "abstained" else state.get("picked") or 0
    return {
        "read": before + current,
        "named": state.get("named"),
        "picked": current[picked - 1] if picked else None,
        "likelihood": [round(p, 4) for p in state.get("judged") or []],
        "confirmed": {k: round(p, 4) for k, p in (state.get("confirmed") or {}).items()},
    }
