"""`bitrag eval --imatrix ... --prune ...`: which rungs are planned (labels, order, what each
setting admits or refuses, one line for a bad value before anything is written), the paired
KLD difference, and one real run over a small real index with the embedded model: a rung
calibrated on notes the divergence never sees, its paired difference from the plain twin, and
a pruned rung with a layer fewer in its GGUF header, the one whose removal alone diverged
least."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval.calibrated import pair, paired_difference
from eval.dataset import QA_PATH
from eval.prune_order import before_last, layers_for
from eval.quantize import prune_rule
from eval.rung_plan import Calibration, PlannedRung, plan, prunes
from retrieval.errors import UserError

REPO = Path(__file__).resolve().parent.parent
DOCS = ["lora-qlora.md", "activation-checkpointing-lecture-notes.md"]
PICK = ["out-026", "core-004"]  # one question on each of the two notes


def labels(rungs: list[PlannedRung]) -> list[str]:
    return [r.label for r in rungs]


def test_each_type_gets_its_calibrated_and_pruned_rungs_in_order():
    notes, english = Calibration("notes"), Calibration("notes:en", lang="en")
    rungs = plan(["F16", "Q4_0", "IQ2_XXS"], [notes, english], [1, 4])
    assert labels(rungs) == [
        "F16",  # llama.cpp rounds it without a matrix: no calibrated twin
        "F16-pruned1",
        "F16-pruned4",
        "Q4_0",
        "Q4_0+notes",
        "Q4_0+notes:en",
        "Q4_0-pruned1",
        "Q4_0-pruned4",
        "IQ2_XXS+notes",  # needs a matrix: never plain, pruned with the first calibration
        "IQ2_XXS+notes:en",
        "IQ2_XXS+notes-pruned1",
        "IQ2_XXS+notes-pruned4",
    ]
    assert rungs[4].tag == ".imatrix-notes" and rungs[5].tag == ".imatrix-notes-en"


def test_a_prune_setting_is_layers_or_a_percent_of_them():
    assert prunes(["1", "10%", "3"], 30) == [1, 3]  # 10% of 30 is 3: once
    assert prunes(["25%"], 30) == [8]  # 7.5 rounds half up to 8
    for bad, says in [("x", "give a number"), ("0%", "give a number"), ("29", "--prune 29")]:
        with pytest.raises(UserError, match=says):
            prunes([bad], 30)


def test_the_before_last_rule_removes_the_blocks_just_before_the_last_first():
    order = before_last(30)
    assert order[:3] == [28, 27, 26] and sorted(order) == list(range(29))
    assert layers_for(order, 4) == prune_rule(30, 4) == (25, 26, 27, 28)


def test_the_paired_difference_is_per_token():
    calibrated, plain = np.array([0.1, 0.2, 0.3, 0.2]), np.array([0.2, 0.4, 0.3, 0.5])
    d = paired_difference(calibrated, plain)
    assert d["tokens"] == 4 and d["kld_diff"] == pytest.approx(-0.15)
    assert d["ci95"][0] < -0.15 < d["ci95"][1] and d["kld_mean_uncalibrated"] == 0.35
    with pytest.raises(ValueError):
        paired_difference(calibrated, plain[:3])


def test_a_calibrated_rung_is_paired_with_its_twin_unless_the_twin_is_the_reference(tmp_path):
    def rung(label: str, kind: str, calibration: str = "none", pruned=()) -> dict:
        return {"type": label, "quant_type": kind, "calibration": calibration,
                "pruned_layers": list(pruned)}  # fmt: skip

    rungs = [rung("Q6_K", "Q6_K"), rung("Q6_K+notes", "Q6_K", "notes"), rung("Q2_K", "Q2_K")]
    rungs += [
        rung("Q2_K+notes", "Q2_K", "notes"),
        rung("Q2_K+notes-pruned1", "Q2_K", "notes", [28]),
    ]
    kld = {}
    for r, values in zip(rungs, [[0, 0], [0.1, 0.3], [0.5, 0.7], [0.2, 0.4], [2, 2]], strict=True):
        kld[r["type"]] = tmp_path / f"{r['type']}.npy"
        np.save(kld[r["type"]], np.array(values, np.float64))
    pair(rungs, kld)
    paired = {r["type"]: r["kld_vs_uncalibrated"] for r in rungs}
    assert paired["Q2_K+notes"]["uncalibrated"] == "Q2_K"
    assert paired["Q2_K+notes"]["kld_diff"] == pytest.approx(-0.3)
    assert paired["Q6_K+notes"] is None  # against the reference itself any file diverges more
    assert paired["Q2_K+notes-pruned1"] is None and paired["Q2_K"] is None


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--types", "IQ2_XXS"], "add `--imatrix notes` to compute one from your notes"),
        (["--types", "Q4_0", "--imatrix", "notes:fr"], "unknown language 'fr'"),
        (["--types", "Q4_0", "--imatrix", "nowhere.dat"], "imatrix file nowhere.dat not found"),
        (["--types", "F16,Q8_0", "--imatrix", "notes"], "--imatrix calibrates no rung"),
        (["--types", "Q4_0", "--prune", "30"], "--prune 30:"),
        (["--types", "Q4_0", "--prune", "half"], "--prune half: give a number of layers"),
    ],
)
def test_a_bad_setting_is_one_line_before_anything_is_written(run, tmp_path: Path, args, says):
    done = run("eval", *args, "--out", str(tmp_path / "out"))
    assert done.exit_code != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "Traceback" not in done.output and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def variants(small_index: Path, converted_models: Path, tmp_path_factory) -> Path:
    """`bitrag eval --types Q8_0,Q4_0 --imatrix notes --prune 1` on two questions over the
    index."""
    work = tmp_path_factory.mktemp("variants")
    (work / "home").mkdir()
    (work / "home" / "models").symlink_to(converted_models, target_is_directory=True)
    rows = {json.loads(line)["id"]: line for line in QA_PATH.read_text().splitlines()}
    mine = work / "mine.jsonl"
    mine.write_text("".join(rows[i] + "\n" for i in PICK), encoding="utf-8")
    out = work / "out"
    args = ["--types", "Q8_0,Q4_0", "--imatrix", "notes", "--prune", "1", "--dataset", str(mine)]
    args += ["--index", str(small_index), "--split", "all", "--kld-tokens", "64"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRAG_")}
    done = subprocess.run(
        [sys.executable, "-m", "agent", "eval", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env | {"BITRAG_HOME": str(work / "home")},
        cwd=REPO,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return out


def test_calibrated_and_pruned_rungs_are_measured_beside_the_plain_one(variants: Path):
    from agent.runtime.model_file import inspect_gguf

    r = json.loads((variants / "results.json").read_text())
    rungs = {x["type"]: x for x in r["rungs"]}
    assert r["top_rung"] == "Q8_0"
    assert set(rungs) == {"Q8_0", "Q8_0-pruned1", "Q4_0", "Q4_0+notes", "Q4_0-pruned1"}
    calibrated, pruned = rungs["Q4_0+notes"], rungs["Q4_0-pruned1"]
    assert (calibrated["quant_type"], calibrated["calibration"]) == ("Q4_0", "notes")
    ranking = r["prune_order"]
    assert ranking["rule"] == "measured" and r["source"]["layers"] == 30
    assert [e["layer"] for e in ranking["effects"]] == list(range(29))  # all but the last
    least = min(ranking["effects"], key=lambda e: e["kld"])["layer"]
    assert ranking["order"][0] == least and pruned["pruned_layers"] == [least]
    assert pruned["calibration"] == "none" and rungs["Q8_0-pruned1"]["pruned_layers"] == [least]
    assert calibrated["sha256"] != rungs["Q4_0"]["sha256"]  # the matrix changed the rounding
    layers = inspect_gguf(Path(rungs["Q4_0"]["path"])).layers
    assert inspect_gguf(Path(pruned["path"])).layers == layers - 1
    pair = calibrated["kld_vs_uncalibrated"]
    assert pair["uncalibrated"] == "Q4_0" and pair["tokens"] == calibrated["divergence"]["tokens"]
    plain, mine = rungs["Q4_0"]["divergence"]["kld_mean"], calibrated["divergence"]["kld_mean"]
    assert pair["kld_diff"] == pytest.approx(mine - plain, abs=1e-6)
    (matrix,) = r["calibrations"]
    held = set(r["settings"]["divergence_chunks"])
    assert held and matrix["chunks"] and not held & set(matrix["chunks"])
    report = (variants / "report.md").read_text()
    assert "## Calibration (importance matrices)" in report
    assert "| Q4_0+notes | Q4_0 | 64 | " in report
