"""`bitrag eval` end to end with real llama.cpp on the embedded model and a real index: the
three outputs and their documented keys, self-KLD 0, identical numbers on a second run and
after a resume, one clear line for refused types and bad datasets."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eval.dataset import QA_PATH

REPO = Path(__file__).resolve().parent.parent
PICK = ["en1-003", "en1-004", "core-003", "en1-023", "core-005"]  # limit 4 drops the last
ARGS = ["--types", "Q8_0,Q4_K_M", "--limit", "4", "--kld-tokens", "64"]
TOP_KEYS = {
    "schema_version",
    "source",
    "top_rung",
    "top_rung_label",
    "dataset",
    "index",
    "settings",
    "retrieval",
    "evidence_only",
    "rungs",
    "recommendation",
    "caveats",
    "questions",
    "measured",
}
RUNG_KEYS = {
    "type",
    "path",
    "bytes",
    "bits_per_weight",
    "tensor_types",
    "n_tensor_types",
    "sha256",
    "divergence",
    "answers",
    "evidence_differs",
    "measured",
}
DIVERGENCE_KEYS = {
    "tokens",
    "kld_mean",
    "kld_median",
    "kld_p99_9",
    "same_top_rate",
    "rms_dp_top",
    "rms_dp_next",
    "ln_ppl_ratio",
    "ln_ppl_ratio_se",
    "ppl_ratio",
    "ppl_ratio_ci95",
}
ANSWER_KEYS = {
    "keyword_hit",
    "token_f1",
    "answered",
    "abstained_unanswerable",
    "citation_precision",
    "mode=generated",
    "mode=quoted",
    "mode=abstained",
}
MEASURED_KEYS = {
    "load_s",
    "prompt_tokens_per_s",
    "gen_tokens_per_s",
    "peak_rss_mb",
    "s_per_question",
    "threads",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, converted_models: Path) -> dict:
    home = tmp_path_factory.mktemp("eval-home")
    (home / "models").symlink_to(converted_models, target_is_directory=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BITRAG_")}
    return clean | {"BITRAG_HOME": str(home)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = {json.loads(line)["id"]: line for line in QA_PATH.read_text().splitlines()}
    path = tmp_path_factory.mktemp("qa") / "mine.jsonl"
    path.write_text("".join(rows[i] + "\n" for i in PICK), encoding="utf-8")
    return path


def bitrag(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "eval", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
    )


@pytest.fixture(scope="module")
def first(env: dict, dataset: Path, sample_index: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "out"
    done = bitrag(
        env, *ARGS, "--dataset", str(dataset), "--index", str(sample_index), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    return out


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def numbers(obj):
    """results.json without what may differ between runs: measured values and file paths."""
    if isinstance(obj, dict):
        return {k: numbers(v) for k, v in obj.items() if k not in ("measured", "path")}
    if isinstance(obj, list):
        return [numbers(v) for v in obj]
    return obj


def test_outputs_exist_with_the_documented_keys(first: Path):
    assert (first / "accuracy_vs_bits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (first / "report.md").read_text()
    for part in ("## Recommendation", "evidence-only", "requantized reference", "## Caveats"):
        assert part in report
    r = results(first)
    assert TOP_KEYS <= set(r)
    assert r["source"]["quantized"] and r["top_rung_label"] == "requantized reference"
    assert [x["type"] for x in r["rungs"]] == ["Q8_0", "Q4_K_M"]
    assert r["dataset"]["questions"] == 4
    for rung in r["rungs"]:
        assert RUNG_KEYS <= set(rung)
        assert DIVERGENCE_KEYS <= set(rung["divergence"])
        assert ANSWER_KEYS <= set(rung["answers"])
        assert MEASURED_KEYS <= set(rung["measured"])
        assert rung["evidence_differs"] == 0  # retrieval once: the same evidence everywhere
        assert rung["bytes"] == Path(rung["path"]).stat().st_size
    assert ANSWER_KEYS <= set(r["evidence_only"]["answers"])
    assert {"hit@5", "mrr@10"} <= set(r["retrieval"])
    assert {"type", "summary", "beats_evidence_only"} <= set(r["recommendation"])
    assert r["rungs"][1]["answers"]["keyword_hit"]["vs_top"]["ci95"] is not None


def test_top_rung_against_itself_is_zero_and_lower_bits_diverge(first: Path):
    top, low = results(first)["rungs"]
    assert top["divergence"]["kld_mean"] == pytest.approx(0.0, abs=1e-6)
    assert top["divergence"]["kld_p99_9"] == pytest.approx(0.0, abs=1e-6)
    assert top["divergence"]["same_top_rate"] == 1.0
    assert top["divergence"]["ppl_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert low["bits_per_weight"] < top["bits_per_weight"]
    assert low["divergence"]["kld_mean"] > 1e-3


def test_second_run_and_resumed_run_give_identical_numbers(
    first: Path, env: dict, dataset: Path, sample_index: Path, tmp_path: Path
):
    again = tmp_path / "again"
    done = bitrag(
        env, *ARGS, "--dataset", str(dataset), "--index", str(sample_index), "--out", str(again)
    )
    assert done.returncode == 0, done.stderr
    assert numbers(results(again)) == numbers(results(first))
    # a run killed midway: the last rung's measurement gone, its answer log torn mid-line
    resumed = tmp_path / "resumed"
    shutil.copytree(first, resumed)
    (resumed / "results.json").unlink()
    cache = resumed / "cache"
    newest = max(cache.glob("rung-*.json"), key=lambda p: p.stat().st_mtime)
    newest.unlink()
    log = max(cache.glob("answers-*.jsonl"), key=lambda p: p.stat().st_mtime)
    log.write_text(log.read_text()[:-40])
    done = bitrag(
        env, *ARGS, "--dataset", str(dataset), "--index", str(sample_index), "--out", str(resumed)
    )
    assert done.returncode == 0, done.stderr
    assert numbers(results(resumed)) == numbers(results(first))


def test_imatrix_types_are_refused_with_one_line(env: dict, tmp_path: Path):
    done = bitrag(env, "--types", "Q8_0,IQ2_XS", "--out", str(tmp_path / "out"))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "IQ2_XS" in lines[0] and "importance matrix" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "does not exist"),
        ("this is not json\n", "line 1 is not JSON"),
        ('{"id": "x", "question": "q"}\n', "line 1: missing keys"),
    ],
)
def test_bad_dataset_gives_one_clear_line(env: dict, tmp_path: Path, content, says):
    path = tmp_path / "qa.jsonl"
    if content is not None:
        path.write_text(content)
    done = bitrag(env, "--types", "Q8_0", "--dataset", str(path), "--out", str(tmp_path / "o"))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and str(path) in lines[0], done.stderr
