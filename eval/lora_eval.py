"""`bitrag eval --lora ADAPTER`: every rung answers again with the adapter, against itself alone.

The adapter (a `bitrag tune` output: adapter.gguf with its sidecar adapter.json) is checked
before anything runs: the file as llama.cpp would need it (agent/runtime/adapter.py), a
sidecar that describes it, and a student that is the eval's source model by sha256, so an
adapter trained on another model is refused with one line saying what to do. Each rung
without removed blocks (an adapter names tensors of every block) then gets a twin row
"TYPE+lora": the rung's GGUF with the adapter applied, answering the same questions over the
same recorded retrieval. Its answers carry `vs_base`, the paired difference from the rung
alone (eval/paired_bootstrap.py), besides the usual `vs_top` and `vs_evidence`.
"""

import json
from pathlib import Path

from agent.runtime.adapter import check_adapter
from agent.runtime.model_file import checked_model
from eval.answers_per_rung import same_evidence
from eval.report import ci_text, diff_text, modes_text, table
from retrieval.errors import UserError
from retrieval.hashing import sha256_of

SUFFIX = "+lora"
REQUIRED = ("student_sha256", "rank", "alpha", "steps")  # what the report needs of a sidecar
DECISIONS_VS_BASE = {
    "pick_right": "pick vs base",
    "judge_answerable": "judge (answerable) vs base",
    "judge_unanswerable": "judge (unanswerable) vs base",
}


def lora_label(rung_type: str) -> str:
    return f"{rung_type}{SUFFIX}"


def adapted(rung: dict) -> bool:
    """Whether the rung gets an adapter row: not when blocks were removed from it."""
    return not rung.get("pruned_layers")


def bases(rungs: list[dict], rows: dict) -> dict[str, str]:
    """Adapter row label -> its rung's label, for the rows that were answered."""
    return {lora_label(r["type"]): r["type"] for r in rungs if lora_label(r["type"]) in rows}


def _sidecar(adapter: Path) -> dict:
    path = adapter.with_suffix(".json")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    missing = [k for k in REQUIRED if not isinstance(record, dict) or k not in record]
    if missing:
        raise UserError(
            f"LoRA adapter {adapter} has no readable sidecar {path} with "
            f"{', '.join(missing)} (`bitrag tune` writes it beside the adapter): the eval needs "
            "it to know which model the adapter was trained on"
        )
    return record


def check(lora: str, source: str | None) -> dict:
    """The adapter's record for results.json (`path`, `sha256`, `bytes` and the sidecar's
    fields), or one UserError line: a missing or broken file, a sidecar that describes
    another file, or a student other than the eval's source."""
    adapter = Path(lora).expanduser().resolve()
    base = checked_model(source).path
    check_adapter(adapter, base)
    sidecar, digest = _sidecar(adapter), sha256_of(adapter)
    if sidecar.get("adapter_sha256", digest) != digest:
        raise UserError(
            f"LoRA adapter {adapter} changed since its sidecar {adapter.with_suffix('.json')} "
            "was written (sha256 differs): use the adapter.gguf and adapter.json of one "
            "`bitrag tune` run"
        )
    student, wanted = sidecar["student_sha256"], sha256_of(base)
    if student != wanted:
        raise UserError(
            f"LoRA adapter {adapter} was trained on {sidecar.get('student', 'another model')} "
            f"(sha256 {str(student)[:12]}…), not on the eval source {base.name} (sha256 "
            f"{wanted[:12]}…): pass that model as --source, or tune an adapter for this one "
            f"with `bitrag tune --student {base}`"
        )
    kept = {k: v for k, v in sidecar.items() if k not in ("adapter", "adapter_sha256")}
    return {"path": str(adapter), "sha256": digest, "bytes": adapter.stat().st_size} | kept


def summary(lora: dict, rungs: list[dict], rows: dict, answers: dict) -> dict:
    """results.json's `lora`: the adapter's record, a row per adapted rung, and a sentence."""
    found = []
    for rung in rungs:
        label = lora_label(rung["type"])
        if label not in rows:
            continue
        records = rows[label]
        seconds = sum(r["seconds"] for r in records) / len(records)
        found.append(
            {
                "type": label,
                "base": rung["type"],
                "path": rung["path"],
                "answers": answers[label],
                "evidence_differs": same_evidence(records, rows["evidence"]),
                "measured": {"s_per_question": round(seconds, 3)},
            }
        )
    return lora | {"rows": found, "summary": verdict(found)}


def verdict(found: list[dict]) -> str:
    """Did the adapter help, at which rungs, by how much: keyword hit against each base rung
    with its paired 95% interval."""
    parts, above, below = [], [], []
    for row in found:
        d = row["answers"]["keyword_hit"].get("vs_base")
        if not d:
            continue
        ci = d["ci95"] or [d["diff"], d["diff"]]
        parts.append(f"{row['base']} {d['diff']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]")
        if ci[0] > 0:
            above.append(row["base"])
        if ci[1] < 0:
            below.append(row["base"])
    if not parts:
        return "No rung with the adapter answered an answerable question."
    said = f"Keyword hit with the adapter minus without (paired 95%): {', '.join(parts)}; "
    if above:
        said += f"the adapter helped on {', '.join(above)} (interval above 0)"
    if below:
        said += ("; " if above else "") + f"it hurt on {', '.join(below)} (interval below 0)"
    if not above and not below:
        said += "every interval includes 0, so no rung measurably gained or lost from it"
    return said + "."


def markdown(r: dict) -> list[str]:
    """report.md's LoRA section: the adapter, the verdict, and base vs base+adapter per rung;
    nothing without --lora."""
    lora = r.get("lora")
    if not lora:
        return []
    trained = lora.get("train_seconds")
    lines = [
        "",
        "## LoRA: each rung with and without the adapter (same questions, same evidence)",
        "",
        f"- adapter: `{lora['path']}` ({lora['bytes']:,} bytes, sha256 {lora['sha256'][:16]}…), "
        f"rank {lora['rank']}, alpha {lora['alpha']}, "
        f"targets {', '.join(lora.get('targets') or []) or '–'}, {lora['steps']} steps, "
        f"trained on `{lora.get('student', '?')}` (sha256 {lora['student_sha256'][:16]}…); "
        + (f"training took {trained:.0f} s" if trained else "training time not recorded"),
        "",
        lora["summary"],
        "",
    ]
    decided = [
        m for m in DECISIONS_VS_BASE if any(x["answers"].get(m, {}).get("n") for x in lora["rows"])
    ]
    base = {x["type"]: x for x in r["rungs"]}
    return lines + table(
        [
            "rung",
            "keyword hit [95%]",
            "with adapter [95%]",
            "vs base",
            "token F1 vs base",
            *(DECISIONS_VS_BASE[m] for m in decided),
            "vs top",
            "vs evidence-only",
            "modes with adapter",
            "s/question with adapter",
        ],
        [
            [
                x["base"],
                ci_text(base[x["base"]]["answers"]["keyword_hit"]),
                ci_text(a["keyword_hit"]),
                diff_text(a["keyword_hit"], "vs_base"),
                diff_text(a["token_f1"], "vs_base"),
                *(diff_text(a[m], "vs_base") for m in decided),
                diff_text(a["keyword_hit"], "vs_top"),
                diff_text(a["keyword_hit"], "vs_evidence"),
                modes_text(a),
                x["measured"]["s_per_question"],
            ]
            for x in lora["rows"]
            for a in [x["answers"]]
        ],
    )
