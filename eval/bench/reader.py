"""The reader's judge per model: does it find the passage that states the answer, and say
none when no passage does? Retrieval is the hybrid top-5 of the sample index.

    python -m eval.bench.reader [--model NAME|GGUF] [--split dev|test|all] [--limit N]
                                [--passages N] [--chars N]

Per question (follow-ups left out, they need their parent's turn): the passage the judge
picked, how likely each reply was (0, 1, ...; local models), the shown passages that hold
the question's keywords, prompt tokens and seconds.
Summary: judge accuracy on answerable questions (it names a passage) and on unanswerable
ones (it says 0), pick accuracy (the named passage holds the keywords, over the answerable
questions where some shown passage does), mean prompt tokens and seconds per question.
"""

import argparse
import json
import time

from agent.reader import MAX_PASSAGES, PASSAGE_CHARS, judge, reader_messages
from agent.runtime.context import count_messages
from agent.runtime.llm import load_llm
from eval.dataset import Question, load_questions
from eval.scoring import keyword_hit
from retrieval.paths import SAMPLE_CORPUS, bitrag_home
from retrieval.store import Index, open_index


def judge_one(llm, index: Index, q: Question, passages: int, chars: int) -> dict:
    hits = index.search(q.question, 5, "hybrid")
    start = time.perf_counter()
    verdict = judge(llm, q.question, hits, passages, chars)
    seconds = time.perf_counter() - start
    shown = list(verdict.hits)
    holding = [n for n, h in enumerate(shown, 1) if q.answerable and keyword_hit(h.chunk.text, q)]
    return {
        "id": q.id,
        "answerable": q.answerable,
        "passage": verdict.passage,
        "likelihood": [round(x, 4) for x in verdict.likelihood],
        "holding": holding,
        "prompt_tokens": count_messages(llm, reader_messages(q.question, shown, q.question, chars)),
        "seconds": round(seconds, 2),
    }


def _rate(rows: list[dict], test) -> float | None:
    return round(sum(1 for r in rows if test(r)) / len(rows), 3) if rows else None


def summarize(rows: list[dict]) -> dict:
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    findable = [r for r in answerable if r["holding"]]
    return {
        "n": len(rows),
        "judge_answerable": _rate(answerable, lambda r: r["passage"] > 0),
        "judge_unanswerable": _rate(unanswerable, lambda r: not r["passage"]),
        "pick": _rate(findable, lambda r: r["passage"] in r["holding"]),
        "findable": len(findable),
        "prompt_tokens": round(sum(r["prompt_tokens"] for r in rows) / len(rows)) if rows else 0,
        "s_per_question": round(sum(r["seconds"] for r in rows) / len(rows), 2) if rows else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="registered name or GGUF (default: the embedded model)")
    parser.add_argument("--split", choices=["dev", "test", "all"], default="dev")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--passages", type=int, default=MAX_PASSAGES, help="passages shown")
    parser.add_argument("--chars", type=int, default=PASSAGE_CHARS, help="characters each")
    args = parser.parse_args()
    questions = [q for q in load_questions() if not q.follows]
    if args.split != "all":
        questions = [q for q in questions if q.split == args.split]
    index = open_index(bitrag_home() / "bench-index", SAMPLE_CORPUS)
    llm = load_llm(args.model)
    rows = []
    for q in questions[: args.limit]:
        rows.append(judge_one(llm, index, q, args.passages, args.chars))
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    shown = {"model": llm.name, "split": args.split, "passages": args.passages, "chars": args.chars}
    print(json.dumps(shown | summarize(rows), indent=2))


if __name__ == "__main__":
    main()
