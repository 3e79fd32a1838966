"""results.json: the eval's numbers in one documented object (schema: eval/README.md),
the recommendation drawn from them, and the writing of all three outputs.

Everything outside keys named `measured` is deterministic: two runs of the same eval give
the same values. Under `measured` sit timings, tokens/s, peak memory and thread counts.
"""

import json
import os
import time
from itertools import pairwise
from pathlib import Path

import numpy as np

from eval import lora_eval
from eval.answers_per_rung import same_evidence, score
from eval.dataset import Question
from eval.paired_bootstrap import REPLICATES, SEED, draws, summarize_rows
from eval.recommendation import recommend

SCHEMA_VERSION = 1
MODES = ["generated", "quoted", "abstained"]
RETRIEVAL_MEASURES = ("hit@1", "hit@5", "recall@5", "mrr@10", "ndcg@10")
COMBINED_KEYS = (  # what each model's rung row keeps in the combined results
    "type",
    "quant_type",
    "calibration",
    "pruned_layers",
    "path",
    "bytes",
    "bits_per_weight",
    "divergence",
)


def _retrieval_summary(rows: list[dict]) -> dict:
    out: dict = {"n": len(rows), "retriever": "hybrid", "k": 10}
    if not rows:
        return out
    idx = draws(len(rows))
    for m in RETRIEVAL_MEASURES:
        values = np.array([r[m] for r in rows], dtype=np.float64)
        lo, hi = np.percentile(values[idx].mean(axis=1), [2.5, 97.5])
        out[m] = {
            "value": round(float(values.mean()), 4),
            "ci95": [round(float(lo), 4), round(float(hi), 4)],
        }
    return out


def _unread(questions: list[Question], languages: list[str] | None) -> str | None:
    """A caveat when some questions are in a language the model does not read."""
    if languages is None:
        return None
    unread = [q for q in questions if q.lang not in languages]
    if not unread:
        return None
    langs = ", ".join(sorted({q.lang for q in unread}))
    return (
        f"{len(unread)} of {len(questions)} questions are in {langs}, which the model does not "
        f"read (it reads {', '.join(languages)}): every rung answers them from the evidence "
        "alone (quoted or abstained), as the evidence-only row does, so differences between "
        f"rungs come from the other {len(questions) - len(unread)}."
    )


def _family(rung: dict) -> tuple:
    """Rungs compared along bits per weight: the same calibration and removed layers."""
    return rung.get("calibration", "none"), len(rung.get("pruned_layers") or [])


def _inversions(rungs: list[dict]) -> str | None:
    """A caveat naming each pair, within a family (`_family`), where the rung with more bits
    per weight diverges more."""
    families: dict[tuple, list[dict]] = {}
    for r in sorted(rungs, key=lambda r: -r["bits_per_weight"]):
        families.setdefault(_family(r), []).append(r)
    pairs = [
        f"{more['type']} ({more['bits_per_weight']:.2f} bpw, mean KLD "
        f"{more['divergence']['kld_mean']:.4f}) > {less['type']} ({less['bits_per_weight']:.2f} "
        f"bpw, {less['divergence']['kld_mean']:.4f})"
        for family in families.values()
        for more, less in pairwise(family)
        if more["divergence"]["kld_mean"] > less["divergence"]["kld_mean"]
        and more["bits_per_weight"] > less["bits_per_weight"]
    ]
    if not pairs:
        return None
    return (
        "Divergence does not fall monotonically with bits per weight: "
        + "; ".join(pairs)
        + ". The labels' fallback tensor types (above) differ, and a requantized source's grid "
        "can round unevenly into a new one: compare the rungs by the table, not by name."
    )


def caveats(
    source: dict, rungs: list[dict], settings: dict, questions: list[Question]
) -> list[str]:
    notes = []
    top = rungs[0]
    if source["quantized"]:
        notes.append(
            f"{source['ceiling_note']} The top rung {top['type']} is therefore a requantized "
            "reference, not full precision: divergences are measured from it."
        )
    tokens = rungs[0]["divergence"]["tokens"]
    notes.append(
        f"Divergence is measured over {tokens} tokens of the indexed text "
        f"({settings['window']}-token windows, second half scored); with fewer than 10,000 "
        "tokens the 99.9th percentile is close to the maximum."
    )
    paired = " and the paired KLD differences' intervals treat" if _calibrated(rungs) else " treats"
    notes.append(
        f"The perplexity-ratio interval{paired} tokens as independent (as llama-perplexity "
        "does); neighbouring tokens are correlated, so the true interval is wider."
    )
    notes.append(
        f"{len(questions)} questions: the bootstrap intervals are wide, and differences between "
        "rungs smaller than them are not evidence of a difference."
    )
    unread = _unread(questions, settings["languages"])
    if unread:
        notes.append(unread)
    notes.append(
        "Keyword hit is lexical and token-F1 compares words with the reference answer. The "
        "agent replaces a draft its check rejects with the quoted evidence (mode quoted), so "
        "a weaker rung shows up as fewer generated answers as much as lower accuracy."
    )
    seen: set[str] = set()
    plain_first = sorted(rungs, key=lambda r: (bool(r.get("pruned_layers")), _calibrated_one(r)))
    for r in plain_first:
        kind = r.get("quant_type", r["type"])  # the llama.cpp type, not the row's label
        if kind in seen:
            continue
        seen.add(kind)
        if r["n_tensor_types"] > 2 or kind not in r["tensor_types"]:
            kinds = ", ".join(f"{k}:{v}" for k, v in r["tensor_types"].items())
            notes.append(f"{kind} is a label: its tensors are {kinds}.")
    inverted = _inversions(rungs)
    if inverted:
        notes.append(inverted)
    if any(r.get("evidence_differs") for r in rungs):
        notes.append(
            "Some rungs saw other evidence than the evidence-only row (see evidence_differs)."
        )
    notes.append(
        "Speeds and memory are measured in one process per rung on this machine with the "
        "thread count under measured; other jobs on the machine slow them."
    )
    return notes


def _calibrated_one(rung: dict) -> bool:
    return rung.get("calibration", "none") != "none"


def _calibrated(rungs: list[dict]) -> bool:
    return any(r.get("kld_vs_uncalibrated") for r in rungs)


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


def assemble(
    opts,
    source,
    rungs,
    questions: list[Question],
    rows,
    retrieval,
    index,
    settings,
    seconds,
    lora: dict | None = None,
) -> dict:
    """The results object; `lora`: the adapter's record (eval/lora_eval.py) when `rows` hold
    its rows, each summarized against its base rung too."""
    by_id = {row: {r["id"]: r for r in records} for row, records in rows.items()}
    scores = {row: [score(by_id[row][q.id], q) for q in questions] for row in rows}
    bases = lora_eval.bases(rungs, rows)
    answers = summarize_rows(scores, rungs[0]["type"], "evidence", MODES, bases)
    for rung in rungs:
        records = rows[rung["type"]]
        rung["answers"] = answers[rung["type"]]
        rung["evidence_differs"] = same_evidence(records, rows["evidence"])
        rung["measured"]["s_per_question"] = round(
            sum(r["seconds"] for r in records) / len(records), 3
        )
    evidence = rows["evidence"]
    threads = settings.pop("threads")
    label = "requantized reference" if source["quantized"] else "full precision"
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "top_rung": rungs[0]["type"],
        "top_rung_label": label,
        "dataset": {
            "path": str(opts.dataset),
            "split": opts.split,
            "limit": opts.limit,
            "questions": len(questions),
            "answerable": sum(q.answerable for q in questions),
            "unanswerable": sum(not q.answerable for q in questions),
        },
        "index": index,
        "settings": settings | {"bootstrap_replicates": REPLICATES, "bootstrap_seed": SEED},
        "retrieval": _retrieval_summary(retrieval),
        "evidence_only": {
            "answers": answers["evidence"],
            "measured": {
                "s_per_question": round(sum(r["seconds"] for r in evidence) / len(evidence), 3)
            },
        },
        "rungs": rungs,
        "recommendation": recommend(rungs, answers, label),
        "lora": lora_eval.summary(lora, rungs, rows, answers) if lora else None,
        "caveats": caveats(source, rungs, settings, questions),
        "questions": [
            {
                "id": q.id,
                "type": q.type,
                "lang": q.lang,
                "rows": {row: _strip(by_id[row][q.id]) | {"score": scores[row][i]} for row in rows},
            }
            for i, q in enumerate(questions)
        ],
        "measured": {
            "seconds": round(seconds, 1),
            "threads": threads,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }


def combine(models: list[tuple[str, dict]], seconds: float) -> dict:
    """One results object over several models' ladders, each `assemble`d by its own run on
    the same questions and index: every model x rung is one row (labelled "model TYPE"),
    all rows are summarized again together, so that each interval and each paired
    difference to the best rung (the highest keyword hit; ties: the larger file) uses the
    same draws, and `recommend` picks over all of them against that best rung."""
    first = models[0][1]
    scores = {"evidence": [q["rows"]["evidence"]["score"] for q in first["questions"]]}
    rows, hits = [], {}
    for name, r in models:
        for rung in r["rungs"]:
            label = f"{name} {rung['type']}"
            scores[label] = [q["rows"][rung["type"]]["score"] for q in r["questions"]]
            hits[label] = rung["answers"]["keyword_hit"]["value"]
            rows.append(
                {"label": label, "model": name}
                | {k: rung.get(k) for k in COMBINED_KEYS}
                | {"divergence_from": f"{name} {r['top_rung']}", "measured": rung["measured"]}
            )
    best = max(rows, key=lambda x: (hits[x["label"]] or -1.0, x["bytes"]))
    answers = summarize_rows(scores, best["label"], "evidence", MODES)
    for row in rows:
        row["answers"] = answers[row["label"]]
    ladder = [best] + [x for x in rows if x is not best]
    rec = recommend([x | {"type": x["label"]} for x in ladder], answers, "best rung overall")
    if rec["type"]:
        chosen = next(x for x in rows if x["label"] == rec["type"])
        rec |= {"label": chosen["label"], "model": chosen["model"], "type": chosen["type"]}
    return {
        "schema_version": SCHEMA_VERSION,
        "models": [{"model": name} | r for name, r in models],
        "best": best["label"],
        "dataset": first["dataset"],
        "index": first["index"],
        "evidence_only": {"answers": answers["evidence"]},
        "rungs": rows,
        "recommendation": rec,
        "measured": {
            "seconds": round(seconds, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }


def write_outputs(results: dict, out: Path) -> None:
    """results.json, report.md and accuracy_vs_bits.png, for one model or (`combine`) several."""
    from eval.plot import draw, draw_models
    from eval.report import markdown, markdown_models

    several = "models" in results
    for name, text in (
        ("results.json", json.dumps(results, ensure_ascii=False, indent=1)),
        ("report.md", (markdown_models if several else markdown)(results)),
    ):
        tmp = out / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, out / name)
    (draw_models if several else draw)(results, out / "accuracy_vs_bits.png")
