"""One question, start to finish: retrieve chunks, prompt the model with them numbered, cite.

Citations are checked against the chunks the prompt held: a marker [n] the model
wrote counts only if n was given. When the model cites nothing valid (small
models often do not), the answer is attributed to the given chunk sharing the
most terms with it, and the citation says so (`"by": "overlap"`).
"""

import re
import time
from dataclasses import dataclass

from agent.context import fit
from agent.llm import LLM
from retrieval.store import Hit, Index
from retrieval.tokenize import tokenize

TOP_K = 3
MAX_ANSWER_TOKENS = 128
SYSTEM = (
    "You answer questions about the user's documents. Use only the numbered sources. "
    "Answer in one or two sentences and cite the source number like [1]. "
    "If the sources do not contain the answer, say that the documents do not say."
)
ABSTAIN = "The documents do not contain an answer to this question."
_MARKER = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Citation:
    n: int
    source: str
    chunk_id: str
    by: str  # "model" when the model wrote [n], "overlap" when bitrag attributed it

    def as_dict(self) -> dict:
        return {"n": self.n, "source": self.source, "chunk_id": self.chunk_id, "by": self.by}


def build_messages(question: str, hits: list[Hit]) -> list[dict[str, str]]:
    sources = "\n\n".join(f"[{n}] {h.chunk.text}" for n, h in enumerate(hits, 1))
    user = f"Sources:\n{sources}\n\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _cite(n: int, hit: Hit, by: str) -> Citation:
    return Citation(n, hit.chunk.source, hit.chunk.chunk_id, by)


def check_citations(answer: str, hits: list[Hit]) -> list[Citation]:
    """Valid [n] markers from the answer, else the best-overlapping given chunk."""
    cited = sorted({int(m) for m in _MARKER.findall(answer) if 1 <= int(m) <= len(hits)})
    if cited:
        return [_cite(n, hits[n - 1], "model") for n in cited]
    words = set(tokenize(answer))
    best = max(range(len(hits)), key=lambda i: (len(words & set(tokenize(hits[i].chunk.text))), -i))
    return [_cite(best + 1, hits[best], "overlap")]


def ask(question: str, index: Index, llm: LLM, k: int = TOP_K) -> dict:
    """The DESIGN.md `ask` shape: answer, citations, abstained, timings (seconds)."""
    start = time.perf_counter()
    hits = index.search(question, k)
    retrieved = time.perf_counter()
    if not hits:
        timings = {"retrieve_s": retrieved - start, "generate_s": 0.0}
        return {"answer": ABSTAIN, "citations": [], "abstained": True, "timings": timings}
    messages, given, context = fit(
        llm, lambda kept: build_messages(question, kept), hits, MAX_ANSWER_TOKENS
    )
    answer = llm.chat(messages, MAX_ANSWER_TOKENS).strip()
    citations = check_citations(answer, given)
    timings = {"retrieve_s": retrieved - start, "generate_s": time.perf_counter() - retrieved}
    return {
        "answer": answer,
        "citations": [c.as_dict() for c in citations],
        "abstained": False,
        "timings": timings,
        "context": context.as_dict(),
    }
