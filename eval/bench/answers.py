"""Answer benchmark: the agent graph over data/eval/qa.jsonl, per language and per type.

    python -m eval.bench.answers [--split test|dev|all] [--rows evidence,embedded,qwen]
                                 [--limit N] [--out DIR]

Rows: "evidence" (no LLM: the best quote is the answer, the floor a model must
beat), "embedded" (SmolLM2-135M) and "qwen" (the opt-in pack, when installed).
Follow-up questions run in their parent's session, right after it. Metrics on
the chosen split: keyword hit of the answer text (every keyword group present),
answered rate on answerable questions, abstention rate on unanswerable ones,
citation precision (a cited chunk comes from one of the question's sources),
mode counts, answers with a repeated sentence, seconds per question.
"""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from agent.graph import Agent
from agent.verify import has_repeat
from eval.dataset import Question, load_questions
from eval.scoring import ROWS, cited_right, keyword_hit, make_agent, ordered
from retrieval.paths import SAMPLE_CORPUS, bitrag_home
from retrieval.store import open_index


def run_row(agent: Agent, questions: list[Question]) -> list[dict]:
    """One record per question; a follow-up shares its parent's session."""
    by_id = {q.id: q for q in questions}
    records = []
    for q in questions:
        session = q.follows or q.id
        if q.follows and q.follows not in by_id:
            continue
        start = time.perf_counter()
        result = agent.ask(q.question, session)
        records.append({"question": q, "result": result, "seconds": time.perf_counter() - start})
    return records


def _hit(record: dict) -> bool:
    return keyword_hit(record["result"]["answer"], record["question"])


def summarize(records: list[dict]) -> dict:
    answerable = [r for r in records if r["question"].answerable]
    unanswerable = [r for r in records if not r["question"].answerable]
    cites = [ok for r in answerable for ok in cited_right(r["result"], r["question"])]

    def rate(items: list, test) -> float | None:
        return round(sum(1 for i in items if test(i)) / len(items), 3) if items else None

    return {
        "n": len(records),
        "keyword_hit": rate(answerable, _hit),
        "answered": rate(answerable, lambda r: not r["result"]["abstained"]),
        "abstained_unanswerable": rate(unanswerable, lambda r: r["result"]["abstained"]),
        "citation_precision": round(sum(cites) / len(cites), 3) if cites else None,
        "modes": dict(Counter(r["result"]["mode"] for r in records)),
        "repeats": sum(1 for r in records if has_repeat(r["result"]["answer"])),
        "s_per_question": round(sum(r["seconds"] for r in records) / len(records), 2)
        if records
        else None,
    }


def groups(records: list[dict]) -> dict[str, dict]:
    out = {"all": summarize(records)}
    for key in ("lang", "type"):
        for value in sorted({getattr(r["question"], key) for r in records}):
            chosen = [r for r in records if getattr(r["question"], key) == value]
            out[f"{key}={value}"] = summarize(chosen)
    return out


def table(results: dict[str, dict[str, dict]]) -> str:
    columns = (
        "row",
        "group",
        "n",
        "keyword hit",
        "answered",
        "abstained (unans.)",
        "cite prec.",
        "modes",
        "repeats",
        "s/q",
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row, by_group in results.items():
        for group, m in by_group.items():
            modes = " ".join(f"{k}:{v}" for k, v in sorted(m["modes"].items()))
            lines.append(
                f"| {row} | {group} | {m['n']} | {m['keyword_hit']} | {m['answered']} | "
                f"{m['abstained_unanswerable']} | {m['citation_precision']} | {modes} | "
                f"{m['repeats']} | {m['s_per_question']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["test", "dev", "all"])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    questions = [q for q in load_questions() if args.split in ("all", q.split)]
    questions = ordered(questions)[: args.limit or None]
    index = open_index(bitrag_home() / "bench-index", SAMPLE_CORPUS)
    results: dict[str, dict[str, dict]] = {}
    raw: dict[str, list] = {}
    for row in args.rows.split(","):
        agent = make_agent(row, index)
        if agent is None:
            print(f"row {row}: not installed, skipped (make install-qwen)")
            continue
        records = run_row(agent, questions)
        results[row] = groups(records)
        raw[row] = [
            {"id": r["question"].id, "seconds": r["seconds"], **r["result"]} for r in records
        ]
        print(f"row {row}: {results[row]['all']}", flush=True)
    print(table(results))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "answers.json").write_text(
            json.dumps({"split": args.split, "results": results, "answers": raw},
                       ensure_ascii=False, indent=1)
        )
        (args.out / "answers.md").write_text(table(results) + "\n")


if __name__ == "__main__":
    main()
