"""95% bootstrap intervals, paired across rows: every row is resampled with the same draws.

The same question indices (seeded, B replicates) are drawn for every row, so the interval of
a difference between two rows (a rung against the top rung or the evidence-only row) reflects
only how they differ on the same questions. A measure that applies to some questions only
(keyword hit: answerable ones) is a ratio of sums over the drawn questions; so is citation
precision (right citations / given citations).
"""

import numpy as np

SEED = 0
REPLICATES = 2000
DECISIONS = (
    "judge_answerable",
    "judge_unanswerable",
    "pick_right",
    "draft_hit",
    "draft_kept",
    "confirm_right",
)
MEASURES = ("keyword_hit", "token_f1", "answered", "abstained_unanswerable", *DECISIONS)
COMPARED = ("keyword_hit", "token_f1", *DECISIONS)  # also given as differences to top/floor


def draws(n: int, replicates: int = REPLICATES, seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(replicates, n))


def _ratio(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> tuple[float | None, np.ndarray]:
    """The point estimate and its replicates of sum(num) / sum(den)."""
    if den.sum() == 0:
        return None, np.array([])
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    return float(num.sum() / den.sum()), reps  # NaN where a draw held no applicable question


def _columns(scores: list[dict], modes: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """measure -> (numerator per question, denominator per question)."""
    cols = {}
    for m in MEASURES:
        values = [s.get(m) for s in scores]
        cols[m] = (
            np.array([v or 0.0 for v in values], dtype=np.float64),
            np.array([v is not None for v in values], dtype=np.float64),
        )
    cols["citation_precision"] = (
        np.array([s["cites_right"] for s in scores], dtype=np.float64),
        np.array([s["cites_given"] for s in scores], dtype=np.float64),
    )
    for mode in modes:
        cols[f"mode={mode}"] = (
            np.array([s["mode"] == mode for s in scores], dtype=np.float64),
            np.ones(len(scores)),
        )
    return cols


def interval(reps: np.ndarray) -> list[float] | None:
    reps = reps[np.isfinite(reps)]
    if len(reps) == 0:
        return None
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def summarize_rows(
    rows: dict[str, list[dict]],
    top: str | None,
    floor: str,
    modes: list[str],
    bases: dict[str, str] | None = None,
) -> dict[str, dict]:
    """Per row and measure: value and ci95; per rung also the paired difference (and its
    interval) against the `top` row and the `floor` (evidence-only) row, and for a row named
    in `bases` (a rung with a LoRA adapter) against its base row, as `vs_base`."""
    n = len(next(iter(rows.values())))
    idx = draws(n)
    out: dict[str, dict] = {}
    reps: dict[str, dict[str, np.ndarray]] = {}
    for name, scores in rows.items():
        out[name], reps[name] = {}, {}
        for measure, (num, den) in _columns(scores, modes).items():
            value, replicate = _ratio(num, den, idx)
            reps[name][measure] = replicate
            out[name][measure] = {
                "value": None if value is None else round(value, 4),
                "ci95": interval(replicate),
                "n": int(den.sum()),
            }
    for name in rows:
        base = (bases or {}).get(name)
        for measure in COMPARED:
            for other, label in ((top, "vs_top"), (floor, "vs_evidence"), (base, "vs_base")):
                a, b = out[name][measure]["value"], out.get(other, {}).get(measure, {}).get("value")
                if other is None or other == name or a is None or b is None:
                    continue
                diff = reps[name][measure] - reps[other][measure]
                out[name][measure][label] = {"diff": round(a - b, 4), "ci95": interval(diff)}
    return out
