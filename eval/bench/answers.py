"""Answer benchmark: the agent graph over data/eval/qa.jsonl, per language and per type.

    python -m eval.bench.answers [--split test|dev|all]
                                 [--rows evidence,embedded,qwen,qwen-1.5b] [--limit N] [--out DIR]
                                 [--record FILE]

Rows: "evidence" (no LLM: the best quote is the answer, the floor a model must
beat), "embedded" (SmolLM2-135M), "qwen" and "qwen-1.5b" (the opt-in packs, when
installed; the reader decides with them, agent/reader.py).
Follow-up questions run in their parent's session, right after it. Metrics on
the chosen split: keyword hit of the answer text (every keyword group present; an
abstention never hits), answered rate on answerable questions, abstention rate on unanswerable ones,
citation precision (a cited chunk comes from one of the question's sources),
mode counts, answers with a repeated sentence, seconds per question; where the
reader decided: judge accuracy on answerable questions (it named a passage) and on
unanswerable ones (it named none), whatever the check did after, pick accuracy (the
passage it named holds the keywords), draft keyword hit before the check and the share
of drafts kept. Each row's keyword hit is set against the evidence row's with a paired
95% interval.
--record FILE appends one JSON line per answered question (row, id, seconds, the
picked passage's text and the agent's whole result: draft, evidence, reader
likelihoods), so a run cut short keeps what it measured and drafts can be re-checked
offline.
"""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from agent.graph import Agent
from agent.verify import has_repeat
from eval.answers_per_rung import decisions, named
from eval.dataset import Question, load_questions
from eval.paired_bootstrap import DECISIONS, draws, interval
from eval.scoring import ROWS, answer_hit, cited_right, keyword_hit, make_agent, ordered
from retrieval.paths import SAMPLE_CORPUS, bitrag_home
from retrieval.store import open_index


def run_row(agent: Agent, questions: list[Question], progress=None) -> list[dict]:
    """One record per question; a follow-up shares its parent's session."""
    by_id = {q.id: q for q in questions}
    texts = {c.chunk_id: c.text for c in agent.context.index.chunks}
    records = []
    for q in questions:
        session = q.follows or q.id
        if q.follows and q.follows not in by_id:
            continue
        start = time.perf_counter()
        result = agent.ask(q.question, session)
        seconds = time.perf_counter() - start
        picked = named(result.get("reader"))
        text = texts.get(picked, "") if picked else None
        records.append({"question": q, "result": result, "seconds": seconds, "picked": text})
        if progress:
            progress(records[-1])
    return records


def progress_line(record: dict) -> None:
    """One line per answered question, so a run cut short still shows what it measured."""
    q, result = record["question"], record["result"]
    picked = named(result.get("reader"))
    hit = answer_hit(result, q) if q.answerable else None
    print(
        json.dumps(
            {
                "id": q.id,
                "mode": result["mode"],
                "hit": hit,
                "picked": picked.rsplit("/", 1)[-1] if picked else None,
                "pick_holds": keyword_hit(record["picked"], q) if picked and q.answerable else None,
                "s": round(record["seconds"], 1),
            },
            ensure_ascii=False,
        ),
        flush=True,
    )


def _hit(record: dict) -> bool:
    return answer_hit(record["result"], record["question"])


def summarize(records: list[dict]) -> dict:
    answerable = [r for r in records if r["question"].answerable]
    unanswerable = [r for r in records if not r["question"].answerable]
    cites = [ok for r in answerable for ok in cited_right(r["result"], r["question"])]

    def rate(items: list, test) -> float | None:
        return round(sum(1 for i in items if test(i)) / len(items), 3) if items else None

    return {
        **_decisions(records),
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


def _decisions(records: list[dict]) -> dict:
    """The reader's decisions (eval.answers_per_rung.decisions), averaged where they apply."""
    scored = [decisions(r["result"] | {"picked_text": r["picked"]}, r["question"]) for r in records]

    def mean(key: str) -> float | None:
        values = [s[key] for s in scored if s[key] is not None]
        return round(sum(values) / len(values), 3) if values else None

    judged = sum(1 for r in records if r["result"].get("reader"))
    return {"judged": judged, **{key: mean(key) for key in DECISIONS}}


def versus_evidence(raw: dict[str, list[dict]]) -> dict[str, dict]:
    """Each row's keyword hit minus the evidence row's on the same answerable questions,
    with a paired 95% bootstrap interval."""
    if "evidence" not in raw:
        return {}
    floor = [r for r in raw["evidence"] if r["question"].answerable]
    out = {}
    for row, records in raw.items():
        mine = [r for r in records if r["question"].answerable]
        if row == "evidence" or len(mine) != len(floor) or not mine:
            continue
        diff = np.array([float(_hit(a)) - float(_hit(b)) for a, b in zip(mine, floor, strict=True)])
        reps = diff[draws(len(diff))].mean(axis=1)
        out[row] = {"diff": round(float(diff.mean()), 3), "ci95": interval(reps)}
    return out


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


def recorder(row: str, path: Path | None):
    """The per-question callback: the progress line (rows with a model), and a JSON line in
    `path` if given."""

    def record(r: dict) -> None:
        if row != "evidence":
            progress_line(r)
        if path:
            line = {"row": row, "id": r["question"].id, "seconds": round(r["seconds"], 3)}
            line |= {"picked_text": r["picked"], **r["result"]}
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")

    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=["test", "dev", "all"])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    questions = [q for q in load_questions() if args.split in ("all", q.split)]
    questions = ordered(questions)[: args.limit or None]
    index = open_index(bitrag_home() / "bench-index", SAMPLE_CORPUS)
    results: dict[str, dict[str, dict]] = {}
    raw: dict[str, list] = {}
    records_of: dict[str, list[dict]] = {}
    for row in args.rows.split(","):
        agent = make_agent(row, index)
        if agent is None:
            print(f"row {row}: not installed, skipped (make install-qwen)")
            continue
        records = run_row(agent, questions, recorder(row, args.record))
        records_of[row] = records
        results[row] = groups(records)
        raw[row] = [
            {"id": r["question"].id, "seconds": r["seconds"], **r["result"]} for r in records
        ]
        print(f"row {row}: {results[row]['all']}", flush=True)
    print(table(results))
    paired = versus_evidence(records_of)
    for row, d in paired.items():
        print(f"{row} keyword hit vs evidence: {d['diff']:+.3f}, paired 95% interval {d['ci95']}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {"split": args.split, "results": results, "vs_evidence": paired, "answers": raw}
        (args.out / "answers.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))
        (args.out / "answers.md").write_text(table(results) + "\n")


if __name__ == "__main__":
    main()
