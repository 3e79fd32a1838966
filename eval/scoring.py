"""How an answer is scored and which agents the answer measurements compare: keyword hit and
citation checks, follow-ups ordered after their parent, and the rows (evidence-only, the
embedded model, the Qwen pack). Shared by `bitrag eval` and eval/bench/answers.py."""

import re
from pathlib import Path

from agent.evidence import TermWeights
from agent.graph import Agent
from agent.state import Context
from eval.dataset import Question
from retrieval.store import Index

ROWS = ("evidence", "embedded", "qwen", "qwen-1.5b")
PACK_ROWS = {"qwen": "qwen2.5-coder-0.5b", "qwen-1.5b": "qwen2.5-coder-1.5b"}


def keyword_hit(answer: str, question: Question) -> bool:
    """Every keyword group has an alternative in the answer; a number stands alone ("2
    points" is not in "32 points", "1.2" is not in "1.25")."""
    text = answer.lower()
    return all(any(_contains(text, alt.lower()) for alt in group) for group in question.keywords)


def _contains(text: str, keyword: str) -> bool:
    before = r"(?<![\d.])" if keyword[:1].isdigit() else ""
    after = r"(?!\.?\d)" if keyword[-1:].isdigit() else ""
    return re.search(before + re.escape(keyword) + after, text) is not None


def answer_hit(result: dict, question: Question) -> bool:
    """The answer's keyword hit; an abstention never hits, though its text may repeat the
    question's words ("The notes do not answer this. Searched for ... GGUF")."""
    return not result["abstained"] and keyword_hit(result["answer"], question)


def cited_right(result: dict, question: Question) -> list[bool]:
    return [Path(c["source"]).name in question.sources for c in result["citations"]]


def _no_model():
    raise RuntimeError("the evidence-only row has no model")


def make_agent(row: str, index: Index) -> Agent | None:
    from agent.assemble import make_agent as assemble
    from agent.assemble import session_store
    from agent.tools import local_tools

    weights = TermWeights(index.bm25)
    if row == "evidence":
        context = Context(index, _no_model, weights, frozenset(), tools=local_tools())
        return Agent(context, session_store(None))
    if row in PACK_ROWS:
        from agent.runtime.registry import path_of

        if path_of(PACK_ROWS[row]) is None:
            return None
        return assemble(index, PACK_ROWS[row], None, None)
    from agent.runtime.model_file import embedded_model_path

    return assemble(index, str(embedded_model_path()), None, None)  # not the default pack


def ordered(questions: list[Question]) -> list[Question]:
    """Each follow-up right after the question it follows."""
    children: dict[str, list[Question]] = {}
    for q in questions:
        if q.follows:
            children.setdefault(q.follows, []).append(q)
    out: list[Question] = []
    for q in questions:
        if not q.follows:
            out += [q, *children.get(q.id, [])]
    return out
