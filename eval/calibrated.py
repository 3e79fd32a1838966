"""The eval's importance matrices and what they change.

Each `--imatrix` calibration of the notes gets one matrix per (source sha256, calibration,
sample): eval/calibration.py's sample of the index's chunks minus the held-out ones (those
the divergence windows hold, so calibration and evaluation text never overlap), computed
once and kept as `--out/models/<source stem>.imatrix-<calibration>.dat` with a sidecar that
says what it was computed from. A given `.dat` file is used as it is.

Each calibrated rung that has an uncalibrated twin (the same type, the same removed layers)
other than the top rung (the divergence reference) gets the paired per-token KLD difference,
calibrated minus uncalibrated, over the same scored tokens against the same reference: its
mean and mean +- 1.96 standard errors (tokens taken as independent, as for the perplexity
ratio).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval import eval_cache
from eval.calibration import describe, from_chunks, sample
from eval.imatrix import Imatrix, read
from eval.rung_plan import Calibration
from retrieval.errors import UserError


@dataclass
class Matrix:
    calibration: Calibration
    imatrix: Imatrix
    path: Path
    sha256: str  # of the .dat file
    description: str  # eval/calibration.py `describe` of the sample, or the file's dataset
    chunks: list[str] | None  # the sampled chunk ids; None for a given file


def matrices(
    given: list[Calibration],
    source: dict,
    index,
    held_out: list[str],
    models: Path,
    memo: Path,
    progress,
) -> dict[str, Matrix]:
    """calibration spec -> its matrix, computed (or reused) for every notes calibration."""
    found = {}
    for c in given:
        if c.path is not None and c.imatrix is not None:
            found[c.spec] = Matrix(
                c,
                c.imatrix,
                c.path,
                eval_cache.sha256_file(c.path),
                f"{c.path.name}: {c.imatrix.dataset or 'no dataset recorded'}",
                None,
            )
        else:
            found[c.spec] = _notes(c, source, index, held_out, models, memo, progress)
    return found


def _notes(c: Calibration, source: dict, index, held_out, models, memo, progress) -> Matrix:
    chunks = sample(index.chunks, held_out=held_out, lang=c.lang)
    if not chunks:
        text = f"{c.lang} text" if c.lang else "text"
        raise UserError(
            f"--imatrix {c.spec}: the index at {index.generation.parent} holds no {text} "
            "outside the divergence sample to calibrate on"
        )
    description = describe(chunks)
    src = Path(source["path"])
    path = models / f"{src.stem}.imatrix-{c.slug}.dat"
    sidecar = models / f".{path.name}.json"
    wanted = {"source_sha256": source["sha256"], "calibration": c.spec, "sample": description}
    made = eval_cache.read_json(sidecar)
    if not (path.is_file() and made and {k: made.get(k) for k in wanted} == wanted):
        from_chunks(src, chunks, path, progress)
        eval_cache.write_json(sidecar, wanted | {"chunks": [x.chunk_id for x in chunks]})
    ids = [x.chunk_id for x in chunks]
    return Matrix(c, read(path), path, eval_cache.sha256_file(path, memo), description, ids)


def summary(found: dict[str, Matrix]) -> list[dict]:
    """results.json's `calibrations`."""
    return [
        {
            "calibration": spec,
            "description": m.description,
            "imatrix": str(m.path),
            "sha256": m.sha256,
            "chunks": m.chunks,
        }
        for spec, m in found.items()
    ]


def pair(rungs: list[dict], kld: dict[str, Path]) -> None:
    """Set every rung's `kld_vs_uncalibrated`: the paired difference from its uncalibrated
    twin for a calibrated rung that has one, else None; not from the top rung (rungs[0]),
    the reference itself, against which any other file diverges more. `kld`: label ->
    per-token KLD .npy."""
    plain = {
        (r["quant_type"], tuple(r["pruned_layers"])): r
        for r in rungs[1:]
        if r["calibration"] == "none"
    }
    for r in rungs:
        twin = plain.get((r["quant_type"], tuple(r["pruned_layers"])))
        if r["calibration"] == "none" or twin is None:
            r["kld_vs_uncalibrated"] = None
            continue
        r["kld_vs_uncalibrated"] = {"uncalibrated": twin["type"]} | paired_difference(
            np.load(kld[r["type"]]), np.load(kld[twin["type"]])
        )


def paired_difference(calibrated: np.ndarray, uncalibrated: np.ndarray) -> dict:
    """Mean per-token difference, calibrated minus uncalibrated, with its 95% interval."""
    if calibrated.shape != uncalibrated.shape:
        raise ValueError(f"{calibrated.shape} tokens against {uncalibrated.shape}")
    d = np.asarray(calibrated, np.float64) - np.asarray(uncalibrated, np.float64)
    n, mean = len(d), float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return {
        "tokens": n,
        "kld_diff": round(mean, 8),
        "kld_diff_se": round(se, 8),
        "ci95": [round(mean - 1.96 * se, 8), round(mean + 1.96 * se, 8)],
        "kld_mean_uncalibrated": round(float(uncalibrated.mean()), 8),
    }
