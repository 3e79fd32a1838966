"""Which rung to recommend, from the summarized rungs of one ladder (or of several models'
ladders): the smallest whose keyword hit and reader decisions reach the lower end of the top
rung's 95% interval; when the answers cannot tell the rungs apart (every rung answered as
the top did, or the top's interval reaches 0), the smallest within a divergence budget of
the top; and, said first when none does, whether any rung beats the
evidence-only row. Used by eval/results.py."""


def _vs_evidence(answers: dict[str, dict], beating: list[str]) -> str:
    """How the rungs above evidence-only differ from it, with their paired intervals."""
    parts, clear = [], False
    for name in beating:
        d = answers[name]["keyword_hit"]["vs_evidence"]
        ci = d["ci95"]
        clear = clear or bool(ci and ci[0] > 0)
        parts.append(f"{name} {d['diff']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""))
    verdict = (
        "at least one interval lies above 0"
        if clear
        else "every interval includes 0, so none is clearly better than quoting the evidence"
    )
    return f"Keyword hit above evidence-only (paired 95% interval): {', '.join(parts)}; {verdict}."


JUDGED = ("keyword_hit", "pick_right", "judge_answerable", "judge_unanswerable")
# When the answers cannot tell the rungs apart, a rung is recommended only if its next-token
# distributions stay this close to the top rung's (mean KLD, nats per token). Our choice, not
# a standard: on the embedded 135M it admits Q8_0-like rungs (same top token about 9 times in
# 10) and refuses Q2_K (0.58) and one pruned block (0.13).
KLD_BUDGET = 0.10


def _within_top(answers: dict[str, dict], rung: str, top: str) -> bool:
    """Whether the rung's keyword hit and, where a reader decided, its decisions each reach
    the lower end of the top rung's 95% interval."""
    for measure in JUDGED:
        best, mine = answers[top].get(measure), answers[rung].get(measure)
        if not best or best["value"] is None or not mine or mine["value"] is None:
            continue
        if mine["value"] < (best["ci95"][0] if best["ci95"] else best["value"]):
            return False
    return True


def _answers_tie(answers: dict[str, dict], rungs: list[dict]) -> bool:
    """Whether every rung scored as the top rung did on every question, for the keyword hit
    and each measured decision: every paired difference 0 with the interval [0, 0]."""
    for rung in rungs[1:]:
        for measure in JUDGED:
            d = (answers[rung["type"]].get(measure) or {}).get("vs_top")
            if d and (d["diff"] != 0 or (d["ci95"] or [0.0, 0.0]) != [0.0, 0.0]):
                return False
    return len(rungs) > 1


def _decided(answers: dict[str, dict], rung: str) -> str:
    pick = answers[rung].get("pick_right") or {}
    if pick.get("value") is None:
        return ""
    return (
        f", and whose reader decisions stay within its intervals too (picks the passage "
        f"holding the answer {pick['value']:.3f})"
    )


def _divergence(pick: dict, top: dict) -> str:
    d = pick["divergence"]
    return (
        f"{d['kld_mean']:.3f} nats from {pick.get('divergence_from', top['type'])}'s (mean KLD; "
        f"same top token {d['same_top_rate'] * 100:.1f}%)"
    )


def _by_answers(pick: dict, top: dict, answers: dict[str, dict], label: str) -> str:
    top_hit = answers[top["type"]]["keyword_hit"]
    bound = top_hit["ci95"][0] if top_hit["ci95"] else top_hit["value"]
    hit = answers[pick["type"]]["keyword_hit"]["value"]
    return (
        f"{pick['type']} ({pick['bytes'] / 1e6:.1f} MB, {pick['bits_per_weight']:.2f} bits per "
        f"weight) is the smallest rung whose keyword hit ({hit:.3f}) reaches the lower end of "
        f"the 95% interval of {top['type']}, the {label} (lower end {bound:.3f}; "
        f"{top['type']} itself {top_hit['value']:.3f}){_decided(answers, pick['type'])}. "
        f"Its next-token distributions on your text are {_divergence(pick, top)}: the "
        "intervals are wide, so check the divergence table before trusting a low rung."
    )


def _by_divergence(pick: dict, top: dict, answers: dict[str, dict], label: str, tie: bool) -> str:
    hit = answers[top["type"]]["keyword_hit"]["value"]
    why = (
        f"every rung scored as {top['type']}, the {label}, did on every question (keyword hit "
        f"{hit:.3f}), usually because the model's drafts were refused and the evidence quoted"
        if tie
        else f"the 95% interval of {top['type']}, the {label}, reaches down to 0 (keyword hit "
        f"{hit:.3f}), so any rung would pass it: too few questions to rank rungs"
    )
    return (
        f"The answers do not tell the rungs apart: {why}. So the choice falls "
        f"to divergence: {pick['type']} ({pick['bytes'] / 1e6:.1f} MB, "
        f"{pick['bits_per_weight']:.2f} bits per weight) is the smallest rung whose mean KLD "
        f"stays within {KLD_BUDGET} nats; its next-token distributions on your text are "
        f"{_divergence(pick, top)}."
    )


def recommend(rungs: list[dict], answers: dict[str, dict], label: str) -> dict:
    """The smallest rung whose keyword hit (and, with a reader model, whose judge and pick
    accuracy) reaches the lower end of the top rung's 95% interval, and when every rung
    answered exactly as the top rung did or that lower end is 0, also stays within
    KLD_BUDGET of it; and whether any
    rung beats the evidence-only row at all, said first when none does. `label` names the top
    rung ("requantized reference" or "full precision"); a rung's divergence is from the top
    rung unless it names its own reference under `divergence_from`."""
    top = rungs[0]
    top_hit = answers[top["type"]]["keyword_hit"]
    floor = answers["evidence"]["keyword_hit"]["value"]
    if top_hit["value"] is None:
        return {
            "type": None,
            "criterion": "none",
            "beats_evidence_only": None,
            "summary": "No answerable questions were asked, so no rung can be recommended "
            "on accuracy; see the divergence table.",
        }
    bound = top_hit["ci95"][0] if top_hit["ci95"] else top_hit["value"]
    ok = [r for r in rungs if _within_top(answers, r["type"], top["type"])]
    tie = _answers_tie(answers, rungs)
    undecided = tie or bound <= 0  # every rung reaches a lower end of 0
    if undecided:
        ok = [r for r in ok if r is top or r["divergence"]["kld_mean"] <= KLD_BUDGET]
    pick = min(ok, key=lambda r: (r["bytes"], -r["bits_per_weight"]))
    beating = [r["type"] for r in rungs if answers[r["type"]]["keyword_hit"]["value"] > floor]
    hit = answers[pick["type"]]["keyword_hit"]["value"]
    if undecided:
        choice = _by_divergence(pick, top, answers, label, tie)
    else:
        choice = _by_answers(pick, top, answers, label)
    if beating:
        summary = f"{choice} {_vs_evidence(answers, beating)}"
    else:
        summary = (
            f"No rung beats evidence-only: no rung's keyword hit is above the {floor:.3f} of "
            "quoting the retrieved evidence with no model. On these questions the model adds "
            "nothing measurable, and evidence-only answers need no model at all. If you want "
            f"generated answers anyway: {choice}"
        )
    return {
        "type": pick["type"],
        "bytes": pick["bytes"],
        "bits_per_weight": pick["bits_per_weight"],
        "keyword_hit": hit,
        "criterion": (
            f"answers tie with {top['type']} on every question"
            if tie
            else f"the 95% interval of {top['type']} reaches 0"
        )
        + f"; mean KLD from it <= {KLD_BUDGET} nats"
        if undecided
        else f"keyword_hit (and the reader's decisions, where measured) >= lower 95% "
        f"bound of {top['type']} (keyword hit {bound:.4f})",
        "beats_evidence_only": bool(beating),
        "rungs_beating_evidence_only": beating,
        "summary": summary,
    }
