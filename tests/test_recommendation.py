"""The recommendation from summarized rungs: the smallest rung within the top rung's
interval, and when the answers tie on every question, the smallest within the divergence
budget."""

from eval.recommendation import KLD_BUDGET, recommend


def _hit(value: float, diff: float, ci: list[float]) -> dict:
    return {
        "value": value,
        "ci95": [value - 0.1, value + 0.1],
        "vs_top": {"diff": diff, "ci95": ci},
        "vs_evidence": {"diff": diff + 0.1, "ci95": [ci[0] + 0.1, ci[1] + 0.1]},
    }


def _rung(name: str, mb: float, bits: float, kld: float) -> dict:
    divergence = {"kld_mean": kld, "same_top_rate": 1.0 - kld}
    return {"type": name, "bytes": int(mb * 1e6), "bits_per_weight": bits, "divergence": divergence}


RUNGS = [_rung("Q8_0", 145, 8.5, 0.0), _rung("Q4_K_M", 105, 5.9, 0.05), _rung("Q2_K", 88, 5.1, 0.6)]


def _answers(q4: dict, q2: dict) -> dict:
    top = {"value": 0.45, "ci95": [0.35, 0.55], "vs_evidence": {"diff": 0.15, "ci95": [0.05, 0.25]}}
    return {
        "Q8_0": {"keyword_hit": top},
        "Q4_K_M": {"keyword_hit": q4},
        "Q2_K": {"keyword_hit": q2},
    }


def test_answers_that_tie_leave_the_choice_to_divergence():
    same = _hit(0.45, 0.0, [0.0, 0.0])
    answers = _answers(same, same) | {"evidence": {"keyword_hit": {"value": 0.45}}}
    rec = recommend(RUNGS, answers, "requantized reference")
    assert rec["type"] == "Q4_K_M"  # Q2_K ties on answers but diverges past the budget
    assert rec["criterion"].endswith(f"<= {KLD_BUDGET} nats")
    assert "do not tell the rungs apart" in rec["summary"]


def test_answers_that_differ_choose_by_the_interval():
    answers = _answers(_hit(0.45, 0.0, [0.0, 0.0]), _hit(0.40, -0.05, [-0.15, 0.05]))
    rec = recommend(RUNGS, answers | {"evidence": {"keyword_hit": {"value": 0.30}}}, "reference")
    assert rec["type"] == "Q2_K"  # 0.40 reaches the top's lower bound 0.35: divergence aside
    assert rec["criterion"].startswith("keyword_hit")
    assert "smallest rung whose keyword hit (0.400)" in rec["summary"]


def test_an_interval_reaching_zero_leaves_the_choice_to_divergence():
    """Two questions: the top's interval is [0, 1], which a rung that answers nothing
    reaches; such a rung is not recommended unless its divergence is within the budget."""
    answers = {
        "Q8_0": {"keyword_hit": {"value": 0.5, "ci95": [0.0, 1.0]}},
        "Q4_K_M": {"keyword_hit": _hit(0.0, -0.5, [-1.0, 0.0])},
        "Q2_K": {"keyword_hit": _hit(0.0, -0.5, [-1.0, 0.0])},
        "evidence": {"keyword_hit": {"value": 0.5}},
    }
    rec = recommend(RUNGS, answers, "requantized reference")
    assert rec["type"] == "Q4_K_M"  # Q2_K reaches 0 too, but diverges 0.6 nats
    assert (
        rec["criterion"]
        == f"the 95% interval of Q8_0 reaches 0; mean KLD from it <= {KLD_BUDGET} nats"
    )
    assert "reaches down to 0 (keyword hit 0.500)" in rec["summary"]
