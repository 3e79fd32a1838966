"""report.md: the eval's results as tables a person reads, from results.json's object."""


def ci_text(m: dict | None, digits: int = 3) -> str:
    if not m or m.get("value") is None:
        return "–"
    ci = m.get("ci95")
    text = f"{m['value']:.{digits}f}"
    return f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else text


def diff_text(m: dict, key: str) -> str:
    d = m.get(key)
    if not d:
        return "–"
    ci = d["ci95"]
    return f"{d['diff']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else f"{d['diff']:+.3f}"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def modes_text(answers: dict) -> str:
    parts = []
    for key, m in answers.items():
        if key.startswith("mode=") and m["value"] is not None:
            parts.append(f"{key[5:]} {round(m['value'] * m['n'])}")
    return ", ".join(parts)


def _dataset_and_index(r: dict) -> list[str]:
    ds, index = r["dataset"], r["index"]
    return [
        f"- dataset: `{ds['path']}`, split {ds['split']}, {ds['questions']} questions "
        f"({ds['answerable']} answerable, {ds['unanswerable']} unanswerable)",
        f"- index: `{index['path']}` generation {index['generation']} ({index['chunks']} chunks)",
    ]


def markdown(r: dict) -> str:
    src, top, s = r["source"], r["top_rung"], r["settings"]
    lines = [
        "# bitrag eval: accuracy versus bit-width",
        "",
        f"- source: `{src['name']}` ({src['type']}, {src['bits_per_weight']:.2f} bits per weight, "
        f"{src['bytes']:,} bytes, sha256 {src['sha256'][:16]}…)",
        f"- top rung: **{top}**, the {r['top_rung_label']}"
        + (" (the source is itself quantized; see caveats)" if src["quantized"] else ""),
        *_dataset_and_index(r),
        f"- settings: temperature 0, seed {s['seed']}, threads {r['measured']['threads']}, "
        f"divergence over {s['kld_tokens']} tokens, {s['bootstrap_replicates']} paired bootstrap "
        f"draws, llama-cpp-python {s['llama_cpp']}",
        "",
        "## Recommendation",
        "",
        r["recommendation"]["summary"],
    ]
    rec = r["recommendation"]
    if rec.get("type"):
        chosen = next(x for x in r["rungs"] if x["type"] == rec["type"])
        m = chosen["measured"]
        lines += [
            "",
            f"Speed of {rec['type']} here: {m['gen_tokens_per_s']} generated and "
            f"{m['prompt_tokens_per_s']} prompt tokens/s, peak RSS {m['peak_rss_mb']} MB.",
        ]
    lines += ["", "## Size and speed (one process per rung)", ""]
    lines += table(
        [
            "rung",
            *_variant_head(r),
            "MB",
            "bits/weight",
            "tensor types",
            "load s",
            "prompt tok/s",
            "gen tok/s",
            "peak RSS MB",
        ],
        [
            [
                x["type"],
                *_variant(r, x),
                f"{x['bytes'] / 1e6:.1f}",
                f"{x['bits_per_weight']:.3f}",
                ", ".join(f"{k}:{v}" for k, v in x["tensor_types"].items()),
                x["measured"]["load_s"],
                x["measured"]["prompt_tokens_per_s"],
                x["measured"]["gen_tokens_per_s"],
                x["measured"]["peak_rss_mb"],
            ]
            for x in r["rungs"]
        ],
    )
    lines += ["", f"## Divergence from {top} ({r['top_rung_label']}) over the indexed text", ""]
    lines += table(
        [
            "rung",
            *_variant_head(r),
            "mean KLD",
            "median KLD",
            "p99.9 KLD",
            "same top",
            "RMS Δp top",
            "RMS Δp next",
            "PPL ratio [95%]",
        ],
        [
            [
                x["type"],
                *_variant(r, x),
                f"{d['kld_mean']:.5f} ± {d['kld_mean_se']:.5f}",
                f"{d['kld_median']:.5f}",
                f"{d['kld_p99_9']:.4f}",
                f"{d['same_top_rate'] * 100:.1f}%",
                f"{d['rms_dp_top'] * 100:.2f}%",
                f"{d['rms_dp_next'] * 100:.2f}%",
                "{:.4f} [{:.4f}, {:.4f}]".format(d["ppl_ratio"], *d["ppl_ratio_ci95"]),
            ]
            for x in r["rungs"]
            for d in [x["divergence"]]
        ],
    )
    lines += _calibration(r)
    lines += _pruning(r)
    lines += ["", "## Answers through the agent graph (same retrieval for every row)", ""]
    rows = [("evidence-only (no model)", r["evidence_only"]["answers"], None)]
    rows += [(x["type"], x["answers"], x) for x in r["rungs"]]
    lines += table(
        [
            "row",
            "keyword hit [95%]",
            "vs top",
            "vs evidence-only",
            "token F1 [95%]",
            "answered",
            "abstained (unans.)",
            "citation precision",
            "modes",
            "s/question",
        ],
        [
            [
                name,
                ci_text(a["keyword_hit"]),
                diff_text(a["keyword_hit"], "vs_top"),
                diff_text(a["keyword_hit"], "vs_evidence"),
                ci_text(a["token_f1"]),
                ci_text(a["answered"]),
                ci_text(a["abstained_unanswerable"]),
                ci_text(a["citation_precision"]),
                modes_text(a),
                (x or {"measured": r["evidence_only"]["measured"]})["measured"]["s_per_question"],
            ]
            for name, a, x in rows
        ],
    )
    lines += _decisions(r)
    lines += _lora(r)
    ret = r["retrieval"]
    lines += ["", f"## Retrieval (once, {ret['retriever']}, {ret['n']} answerable questions)", ""]
    measures = [m for m in ("hit@1", "hit@5", "recall@5", "mrr@10", "ndcg@10") if m in ret]
    lines += table(measures, [[ci_text(ret[m]) for m in measures]]) if measures else ["(none)"]
    lines += _missing_sources(r)
    lines += ["", "## Caveats", ""] + [f"- {c}" for c in r["caveats"]]
    lines += ["", "Plot: accuracy_vs_bits.png. Numbers: results.json (schema in eval/README.md)."]
    return "\n".join(lines)


def _variants(r: dict) -> bool:
    """Whether any rung is calibrated or pruned (then the tables say which)."""
    return any(x.get("calibration", "none") != "none" or x.get("pruned_layers") for x in r["rungs"])


def _variant_head(r: dict) -> list[str]:
    return ["calibration", "pruned layers"] if _variants(r) else []


def _variant(r: dict, x: dict) -> list[str]:
    if not _variants(r):
        return []
    return [x["calibration"], ", ".join(map(str, x["pruned_layers"])) or "–"]


def _calibration(r: dict) -> list[str]:
    """The importance matrices and each calibrated rung's paired KLD difference from its
    uncalibrated twin; nothing without --imatrix."""
    found = r.get("calibrations") or []
    if not found:
        return []
    held = len(r["settings"].get("divergence_chunks") or [])
    lines = [
        "",
        "## Calibration (importance matrices)",
        "",
        f"Notes calibrations never see the {held} chunk{'s' * (held != 1)} the divergence is "
        "measured on.",
        "",
    ]
    lines += [
        f"- `{c['calibration']}`: {c['description']} (`{c['imatrix']}`, sha256 {c['sha256'][:16]}…)"
        for c in found
    ]
    pairs = [x for x in r["rungs"] if x.get("kld_vs_uncalibrated")]
    if not pairs:
        return [*lines, "", "No calibrated rung has an uncalibrated twin to compare with."]
    lines += ["", "Paired per-token KLD difference, calibrated minus uncalibrated (95%):", ""]
    return lines + table(
        ["rung", "uncalibrated twin", "tokens", "mean KLD twin", "KLD difference [95%]"],
        [
            [
                x["type"],
                p["uncalibrated"],
                p["tokens"],
                f"{p['kld_mean_uncalibrated']:.5f}",
                "{:+.5f} [{:+.5f}, {:+.5f}]".format(p["kld_diff"], *p["ci95"]),
            ]
            for x in pairs
            for p in [x["kld_vs_uncalibrated"]]
        ],
    )


def _pruning(r: dict) -> list[str]:
    """Which layers the pruned rungs remove and why; nothing without --prune."""
    ranking = r.get("prune_order")
    if not ranking:
        return []
    lines = ["", "## Pruning", ""]
    if ranking["rule"] == "before-last":
        return lines + [
            "Pruned rungs remove the blocks just before the last (--prune-rule before-last)."
        ]
    kld = {e["layer"]: e["kld"] for e in ranking["effects"]}
    first = ", ".join(f"{i} ({kld[i]:.3f})" for i in ranking["order"][:8])
    worst = max(ranking["effects"], key=lambda e: e["kld"])
    return lines + [
        f"Pruned rungs remove first the blocks whose removal alone changed the model least "
        f"(mean KLD from the whole Q8_0 over {ranking['tokens']} tokens of {ranking['sample']}, "
        f"outside the divergence sample): {first}, ...; block {worst['layer']} alone costs "
        f"{worst['kld']:.3f}. Effects are taken as independent: each pruned rung's own "
        "divergence above is what removing them together measures."
    ]


DECISION_COLUMNS = {
    "judge_answerable": "judge: picks (answerable)",
    "judge_unanswerable": "judge: none (unanswerable)",
    "pick_right": "pick holds the keywords",
    "draft_hit": "draft keyword hit",
    "draft_kept": "drafts kept",
    "confirm_right": "confirm right",
}


def _decisions(r: dict) -> list[str]:
    """The reader model's decisions per rung, each with its interval and its paired
    difference to the top rung; nothing when no rung decided."""
    rungs = [x for x in r["rungs"] if x["answers"].get("pick_right", {}).get("n")]
    if not rungs:
        return []
    head = ["rung", *DECISION_COLUMNS.values(), "pick vs top"]
    rows = [
        [x["type"], *(ci_text(x["answers"].get(m)) for m in DECISION_COLUMNS)]
        + [diff_text(x["answers"]["pick_right"], "vs_top")]
        for x in rungs
    ]
    intro = "The model reads the top passages and names the one that states the answer, or none."
    intro += _who_refused(rungs)
    return ["", "## The reader's decisions per rung (95% intervals)", "", intro, ""] + table(
        head, rows
    )


def _who_refused(rungs: list[dict]) -> str:
    """Said when no rung's judge named none for an unanswerable question: then what refused
    them was the check after the draft, and the judge column does not measure refusing."""
    judged = [x["answers"].get("judge_unanswerable") or {} for x in rungs]
    if not all(j.get("n") and j.get("value") == 0 for j in judged):
        return ""
    return (
        " At every rung it named a passage for every unanswerable question: the refusals were"
        " made by the checks after its draft (the evidence check, the model's yes), not by it."
    )


def _lora(r: dict) -> list[str]:
    from eval.lora_eval import markdown as lora_markdown  # it uses this module's tables

    return lora_markdown(r)


def _missing_sources(r: dict) -> list[str]:
    """The sources questions name that no indexed document matches; nothing when none."""
    missing = r.get("missing_sources") or []
    if not missing:
        return []
    intro = "No indexed document matches these sources, so finding or citing them counts as a miss:"
    return ["", "## Sources not in the index", "", intro, ""] + [
        f"- {m['id']}: `{m['source']}`" for m in missing
    ]


MODEL_DECISIONS = ("judge_answerable", "judge_unanswerable", "pick_right", "draft_kept")


def markdown_models(r: dict) -> str:
    """report.md of several models (eval/results.py `combine`): one table, a row per model
    and rung, each model's own report in its folder."""
    decided = [
        m for m in MODEL_DECISIONS if any(x["answers"].get(m, {}).get("n") for x in r["rungs"])
    ]
    floor = r["evidence_only"]["answers"]["keyword_hit"]
    lines = [
        f"# bitrag eval: accuracy versus bit-width, {len(r['models'])} models",
        "",
        *(
            f"- `{m['model']}`: `{m['source']['name']}` ({m['source']['type']}, "
            f"{m['source']['bits_per_weight']:.2f} bits per weight, {m['source']['bytes']:,} "
            f"bytes); its own report: `{m['model']}/report.md`"
            for m in r["models"]
        ),
        *_dataset_and_index(r),
        "",
        "## Recommendation",
        "",
        r["recommendation"]["summary"],
        "",
        f"## Every model's ladder (95% intervals; vs best: paired difference to {r['best']})",
        "",
    ]
    lines += table(
        [
            "model",
            "rung",
            "bits/weight",
            "MB",
            "keyword hit [95%]",
            "vs best",
            *(DECISION_COLUMNS[m] for m in decided),
            "mean KLD vs its top rung",
            "gen tok/s",
        ],
        [
            [
                x["model"],
                x["type"],
                f"{x['bits_per_weight']:.3f}",
                f"{x['bytes'] / 1e6:.1f}",
                ci_text(x["answers"]["keyword_hit"]),
                diff_text(x["answers"]["keyword_hit"], "vs_top"),
                *(ci_text(x["answers"].get(m)) for m in decided),
                f"{x['divergence']['kld_mean']:.4f}",
                x["measured"]["gen_tokens_per_s"],
            ]
            for x in r["rungs"]
        ],
    )
    lines += [
        "",
        f"Evidence-only (quoting the retrieved evidence, no model): keyword hit {ci_text(floor)}.",
        "",
        "## Caveats",
        "",
        "- Every row answers the same questions over the same retrieval. Divergence is measured "
        "from each model's own top rung, so it compares the rungs of one model, not models.",
        f"- {r['dataset']['questions']} questions: the bootstrap intervals are wide, and "
        "differences smaller than them are not evidence of a difference.",
        "- Each model's report.md holds its speed, divergence, answer and retrieval tables and "
        "its own caveats.",
        "",
        "Plot: accuracy_vs_bits.png. Numbers: results.json (schema in eval/README.md).",
    ]
    return "\n".join(lines)
