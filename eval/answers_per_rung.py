"""Answers through the agent graph for every rung, with retrieval done once.

`RecordedIndex` wraps the index and remembers every search: the evidence-only row runs
first and fills it, so every rung reads the very same hits (and so the same evidence) and
differences between rungs come from the model alone. Each row's answers are appended to a
per-row log, one conversation (a question and its follow-ups) per line, so an interrupted
run resumes after the last finished conversation. Scores per question: keyword hit and
token-F1 (answerable questions), answered / abstained, citations right / given, mode; with a
reader model also its decisions: judge right on answerable and unanswerable questions, the
picked passage holding the keywords, the draft's keyword hit before the check, drafts kept.
Retrieval metrics (hit@1, hit@5, recall@5, MRR@10, nDCG@10) are computed once.
"""

import re
import time
from collections.abc import Callable
from pathlib import Path

from agent.evidence import TermWeights
from agent.graph import Agent
from agent.state import Context
from eval import eval_cache
from eval.dataset import Question
from eval.retrieval_metrics import hit_at, mrr_at, ndcg_at, recall_at
from eval.scoring import answer_hit, cited_right, keyword_hit
from eval.scoring import make_agent as bench_agent
from retrieval.store import Hit, Index

_WORD = re.compile(r"\w+", re.UNICODE)
_MARKER = re.compile(r"\[\d+\]")


class RecordedIndex:
    """The index with every search remembered: one retrieval per (query, k, retriever)."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self._seen: dict[tuple, list[Hit]] = {}

    def search(self, query: str, k: int = 5, retriever="hybrid") -> list[Hit]:
        found = self._seen.get((query, k, retriever))
        if found is None:
            found = self._seen[(query, k, retriever)] = self._index.search(query, k, retriever)
        return list(found)

    @property
    def searches(self) -> int:
        return len(self._seen)

    def __getattr__(self, name: str):
        return getattr(self._index, name)


def tokens(text: str) -> list[str]:
    return _WORD.findall(_MARKER.sub(" ", text).lower())


def token_f1(answer: str, reference: str) -> float:
    """SQuAD-style token F1 (lower-cased word tokens, citation markers dropped)."""
    got, want = tokens(answer), tokens(reference)
    if not got or not want:
        return float(got == want)
    common = sum(min(got.count(t), want.count(t)) for t in set(got))
    if not common:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def decisions(record: dict, q: Question) -> dict:
    """What the reader model decided, scored; None where it did not decide (no reader, or
    a measure that does not apply to the question). The judge and the pick are scored on the
    passage the judge named (`picked_text`), not on what the check kept: a judge that names a
    passage for an unanswerable question is wrong even when the check then abstains."""
    picked = record.get("picked_text")
    judged = record.get("reader") is not None
    draft = record.get("draft") or ""
    return {
        "judge_answerable": float(picked is not None) if judged and q.answerable else None,
        "judge_unanswerable": float(picked is None) if judged and not q.answerable else None,
        "pick_right": float(bool(picked) and keyword_hit(picked, q))
        if judged and q.answerable
        else None,
        "draft_hit": float(keyword_hit(draft, q)) if draft and q.answerable else None,
        "draft_kept": float(record["mode"] == "generated") if draft else None,
        "confirm_right": _confirm_right(record, q),
    }


def _confirm_right(record: dict, q: Question) -> float | None:
    """Whether the model's confirm of its checked draft was right: it kept a draft that hits
    the keywords, or refused one that misses them or answers an unanswerable question."""
    if "draft" not in ((record.get("reader") or {}).get("confirmed") or {}):
        return None
    kept = record["mode"] == "generated"
    right = q.answerable and keyword_hit(_MARKER.sub("", record["draft"]), q)
    return float(kept == right)


def score(record: dict, q: Question) -> dict:
    """What one answer scores; None where a measure does not apply to the question."""
    cites = cited_right(record, q) if q.answerable else []
    return decisions(record, q) | {
        "keyword_hit": float(answer_hit(record, q)) if q.answerable else None,
        "token_f1": round(token_f1(record["answer"], q.answer), 6) if q.answerable else None,
        "answered": float(not record["abstained"]) if q.answerable else None,
        "abstained_unanswerable": float(record["abstained"]) if not q.answerable else None,
        "cites_right": sum(cites),
        "cites_given": len(cites),
        "mode": record["mode"],
    }


def conversations(questions: list[Question]) -> list[list[Question]]:
    """Questions grouped into conversations: a question and the follow-ups after it."""
    groups: list[list[Question]] = []
    for q in questions:
        if q.follows and groups and any(p.id == q.follows for p in groups[-1]):
            groups[-1].append(q)
        else:
            groups.append([q])
    return groups


def named(reader: dict | None) -> str | None:
    """The chunk the reader's judge named (None: it named none), whatever the check did with
    its draft after; a record kept before "named" was, the chunk it answered from."""
    reader = reader or {}
    return reader.get("named", reader.get("picked"))


def _keep(result: dict, q: Question, seconds: float, texts: dict[str, str]) -> dict:
    reader = result.get("reader")
    picked = named(reader)
    return {
        "reader": reader,
        "picked_text": texts.get(picked, "") if picked else None,
        "draft": result["draft"],
        "id": q.id,
        "answer": result["answer"],
        "mode": result["mode"],
        "abstained": result["abstained"],
        "citations": result["citations"],
        "evidence": [[e["chunk_id"], e["quote"]] for e in result["evidence"]],
        "note": result["note"],
        "seconds": round(seconds, 3),
    }


def run_row(
    make: Callable[[], Agent],
    questions: list[Question],
    log: Path,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """One record per question, resuming from `log`; the agent is built only if needed."""
    done = eval_cache.read_lines(log)
    if log.is_file():
        eval_cache.rewrite_lines(log, done)
    by_group = {row["group"]: row["records"] for row in done}
    agent: Agent | None = None
    texts: dict[str, str] = {}
    records: list[dict] = []
    for group in conversations(questions):
        if group[0].id in by_group and len(by_group[group[0].id]) == len(group):
            records += by_group[group[0].id]
        else:
            agent = agent or make()
            texts = texts or {c.chunk_id: c.text for c in agent.context.index.chunks}
            kept = []
            for q in group:
                start = time.perf_counter()
                result = agent.ask(q.question, group[0].id)
                kept.append(_keep(result, q, time.perf_counter() - start, texts))
            eval_cache.append_line(log, {"group": group[0].id, "records": kept})
            records += kept
        if progress:
            progress(len(records), len(questions))
    return records


def evidence_agent(index: RecordedIndex) -> Agent:
    return bench_agent("evidence", index)  # type: ignore[arg-type]


def rung_agent(
    index: RecordedIndex, llm, languages: frozenset[str] | None, reader: bool = False
) -> Agent:
    """The agent graph with this rung's model; it reads what the source model reads and,
    with `reader`, decides as the source model would (agent/reader.py)."""
    from agent.assemble import session_store
    from agent.tools import local_tools

    context = Context(
        index=index,  # type: ignore[arg-type]
        load_llm=lambda: llm,
        weights=TermWeights(index.bm25),
        model_languages=languages,
        tools=local_tools(),
        reader=reader,
    )
    return Agent(context, session_store(None))


def rung_row(
    rung: dict,
    adapter: dict | None,
    index: RecordedIndex,
    questions: list[Question],
    settings: dict,
    cache: Path,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """One rung's answers (`run_row`), its model loaded only if some are not cached, with the
    LoRA `adapter` (eval/lora_eval.py's record) applied when given. `settings`: `languages`,
    `reader` and the cache keys of the questions and index (`keys`)."""
    from agent.runtime.llm import LocalLLM

    languages, reader = settings["languages"], settings["reader"]
    lora = {"lora": adapter["sha256"]} if adapter else {}
    name = eval_cache.key(
        what="answers",
        row=rung["sha256"],
        languages=sorted(languages or []),
        reader=reader,
        **lora,
        **settings["keys"],
    )
    held: list[LocalLLM] = []

    def make() -> Agent:
        path = Path(adapter["path"]) if adapter else None
        held.append(LocalLLM(Path(rung["path"]), adapter=path))
        return rung_agent(index, held[0], languages, reader)

    try:
        return run_row(make, questions, cache / f"answers-{name}.jsonl", progress)
    finally:
        for llm in held:
            llm._llama.close()


def _matches(source: str, wanted: str) -> bool:
    path = Path(source).as_posix()
    return path == wanted or path.endswith("/" + wanted) or Path(source).name == wanted


def retrieval_metrics(index: RecordedIndex, questions: list[Question], k: int = 10) -> list[dict]:
    """Per answerable question: hit@1, hit@5, recall@5, MRR@10, nDCG@10 of hybrid search
    (a follow-up is searched together with the question it follows)."""
    by_id = {q.id: q for q in questions}
    rows = []
    for q in questions:
        if not q.answerable or not q.sources:
            continue
        parent = by_id.get(q.follows) if q.follows else None
        text = f"{parent.question} {q.question}" if parent else q.question
        docs = []
        for hit in index.search(text, k, "hybrid"):
            match = next((s for s in q.sources if _matches(hit.chunk.source, s)), None)
            docs.append(match or hit.chunk.source)
        relevant = set(q.sources)
        rows.append(
            {
                "id": q.id,
                "hit@1": hit_at(docs, relevant, 1),
                "hit@5": hit_at(docs, relevant, 5),
                "recall@5": recall_at(docs, relevant, 5),
                "mrr@10": mrr_at(docs, relevant, 10),
                "ndcg@10": ndcg_at(docs, relevant, 10),
            }
        )
    return rows


def same_evidence(records: list[dict], reference: list[dict]) -> int:
    """How many questions got other evidence than the evidence-only row (expected 0; a
    reader model chooses its evidence inside the passage it picked, so those are left out)."""
    ref = {r["id"]: r["evidence"] for r in reference}
    return sum(
        1
        for r in records
        if r["evidence"] and not r.get("reader") and r["evidence"] != ref.get(r["id"])
    )
