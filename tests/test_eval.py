"""`bitrag eval` end to end with real llama.cpp on the embedded model and a real index.

The acceptance command `bitrag eval --types Q8_0,Q2_K --limit 10` runs once per module (on
the default dataset and the default sample-corpus index, pre-built so that no test pays for
embedding it; `--kld-tokens 256`, one 512-token window, keeps its three divergence passes
short): the three outputs and their documented keys, self-KLD 0 and Q2_K above Q8_0. A
second run of the same command is SIGKILLed twice (while measuring Q2_K, then while a
rung answers, its log torn mid-line) and resumed: its results.json equals the first run's
apart from timings and paths, which shows both that runs repeat and that a killed run
resumes. A user's own question file over a given index; several models (the embedded one
under its name and its path) in one table and one plot; one clear line for refused types,
bad datasets and a duplicated or unknown source (in process: nothing runs before the
refusal)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eval.dataset import QA_PATH
from eval.ladder_run import sample_index_name
from eval.results import _inversions

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--types", "Q8_0,Q2_K", "--limit", "10", "--kld-tokens", "256"]
PICK = ["en1-003", "en1-004", "en1-023", "core-003"]  # a follow-up, an unanswerable; limit 3
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
def env(tmp_path_factory: pytest.TempPathFactory, converted_models: Path, sample_index: Path):
    """A BITRAG_HOME whose default eval index already holds the sample corpus."""
    home = tmp_path_factory.mktemp("eval-home")
    (home / "models").symlink_to(converted_models, target_is_directory=True)
    shutil.copytree(sample_index, home / sample_index_name())
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BITRAG_")}
    return clean | {"BITRAG_HOME": str(home)}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", "eval", *args]


def bitrag(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*args), capture_output=True, text=True, env=env, cwd=REPO, timeout=900
    )


def killed_when(env: dict, out: Path, ready: Callable[[Path], bool]) -> None:
    """Start the acceptance command and SIGKILL it, worker included, once `ready(cache)`."""
    with (out.parent / f"{out.name}.stderr").open("a") as log:
        proc = subprocess.Popen(
            command(*ARGS, "--out", str(out)),
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + 900
    while proc.poll() is None and time.monotonic() < deadline:
        if (out / "cache").is_dir() and ready(out / "cache"):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"the run ended (status {proc.poll()}) before the kill point")


def measuring_second_rung(cache: Path) -> bool:
    done = {p.stem for p in cache.glob("rung-*.json")}
    running = {p.name.removeprefix(".spec-").removesuffix(".json") for p in cache.glob(".spec-*")}
    return len(done) == 1 and bool(running - done)


def answering_with_a_rung(cache: Path) -> bool:
    return len(list(cache.glob("answers-*.jsonl"))) >= 2  # evidence-only done, a rung begun


@pytest.fixture(scope="module")
def first(env: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "out"
    done = bitrag(env, *ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def numbers(obj: object) -> object:
    """results.json without what may differ between runs: measured values and file paths."""
    if isinstance(obj, dict):
        return {k: numbers(v) for k, v in obj.items() if k not in ("measured", "path")}
    if isinstance(obj, list):
        return [numbers(v) for v in obj]
    return obj


def conversations(cache: Path) -> dict[str, list[str]]:
    """Per answer log: the conversation ids in it, in order (the same for every row). A log
    is named by what it depends on, bitrag's code included: edit agent/, retrieval/ or eval/
    while this runs and the resumed run starts new logs, failing the in-place check."""
    return {
        log.name: [json.loads(line)["group"] for line in log.read_text().splitlines()]
        for log in cache.glob("answers-*.jsonl")
    }


def test_outputs_exist_with_the_documented_keys(first: Path):
    assert (first / "accuracy_vs_bits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (first / "report.md").read_text()
    for part in ("## Recommendation", "evidence-only", "requantized reference", "## Caveats"):
        assert part in report
    r = results(first)
    assert TOP_KEYS <= set(r)
    assert r["source"]["quantized"] and r["top_rung_label"] == "requantized reference"
    rec = r["recommendation"]
    assert "requantized reference" in rec["summary"] and "mean KLD" in rec["summary"]
    assert rec["summary"].startswith("No rung beats evidence-only") == (
        not rec["beats_evidence_only"]
    )
    assert any(c.startswith("1 of 10 questions are in ko") for c in r["caveats"])  # core-005
    assert [x["type"] for x in r["rungs"]] == ["Q8_0", "Q2_K"]
    assert r["dataset"]["questions"] == 10 and r["dataset"]["split"] == "test"
    assert Path(r["index"]["path"]).name == sample_index_name()
    for rung in r["rungs"]:
        assert RUNG_KEYS <= set(rung)
        assert DIVERGENCE_KEYS <= set(rung["divergence"])
        assert rung["divergence"]["tokens"] == 256
        assert ANSWER_KEYS <= set(rung["answers"])
        assert MEASURED_KEYS <= set(rung["measured"])
        assert rung["evidence_differs"] == 0  # retrieval once: the same evidence everywhere
        assert rung["bytes"] == Path(rung["path"]).stat().st_size
    assert ANSWER_KEYS <= set(r["evidence_only"]["answers"])
    assert {"hit@5", "mrr@10"} <= set(r["retrieval"])
    assert {"type", "summary", "beats_evidence_only"} <= set(r["recommendation"])
    assert r["rungs"][1]["answers"]["keyword_hit"]["vs_top"]["ci95"] is not None


def test_top_rung_against_itself_is_zero_and_q2_k_diverges_more(first: Path):
    top, low = results(first)["rungs"]
    assert top["divergence"]["kld_mean"] == pytest.approx(0.0, abs=1e-6)
    assert top["divergence"]["kld_p99_9"] == pytest.approx(0.0, abs=1e-6)
    assert top["divergence"]["same_top_rate"] == 1.0
    assert top["divergence"]["ppl_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert low["bits_per_weight"] < top["bits_per_weight"]
    d = low["divergence"]
    assert d["kld_mean"] - 3 * d["kld_mean_se"] > 1e-2  # far above Q8_0's 0, not by chance
    assert d["same_top_rate"] < 1.0 and d["ppl_ratio_ci95"][0] > 1.0


def test_a_run_killed_twice_resumes_to_the_first_runs_numbers(
    first: Path, env: dict, tmp_path: Path
):
    out = tmp_path / "again"
    killed_when(env, out, measuring_second_rung)
    killed_when(env, out, answering_with_a_rung)
    torn = max((out / "cache").glob("answers-*.jsonl"), key=lambda p: p.stat().st_mtime)
    torn.write_text(torn.read_text()[:-40])  # the kill landed mid-write
    assert not (out / "results.json").exists()
    done = bitrag(env, *ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert numbers(results(out)) == numbers(results(first))
    every_row = next(iter(conversations(first / "cache").values()))
    assert conversations(out / "cache")[torn.name] == every_row  # finished in place, none twice


def test_own_questions_over_a_given_index(env: dict, sample_index: Path, tmp_path: Path):
    rows = {json.loads(line)["id"]: line for line in QA_PATH.read_text().splitlines()}
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(rows[i] + "\n" for i in PICK), encoding="utf-8")
    out = tmp_path / "out"
    args = ["--types", "Q8_0", "--dataset", str(mine), "--index", str(sample_index)]
    done = bitrag(
        env, *args, "--split", "all", "--limit", "3", "--kld-tokens", "16", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    r = results(out)
    assert r["dataset"]["path"] == str(mine) and r["index"]["path"] == str(sample_index)
    assert [q["id"] for q in r["questions"]] == PICK[:3]
    assert (r["dataset"]["answerable"], r["dataset"]["unanswerable"]) == (2, 1)
    assert r["rungs"][0]["answers"]["abstained_unanswerable"]["n"] == 1
    assert r["rungs"][0]["evidence_differs"] == 0


def test_a_reader_models_decisions_are_measured_per_rung(
    env: dict, sample_index: Path, tmp_path: Path
):
    rows = {json.loads(line)["id"]: line for line in QA_PATH.read_text().splitlines()}
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(rows[i] + "\n" for i in PICK), encoding="utf-8")
    out = tmp_path / "out"
    args = ["--types", "Q8_0", "--dataset", str(mine), "--index", str(sample_index)]
    args += ["--split", "all", "--limit", "3", "--kld-tokens", "16", "--out", str(out)]
    done = bitrag(env | {"BITRAG_READER": "on"}, *args)
    assert done.returncode == 0, done.stderr
    r = results(out)
    assert r["settings"]["reader"] is True
    answers = r["rungs"][0]["answers"]
    assert answers["pick_right"]["n"] == 2 and answers["judge_answerable"]["n"] == 2
    assert r["evidence_only"]["answers"]["pick_right"]["n"] == 0  # no model, no decisions
    for q in r["questions"]:
        row = q["rows"]["Q8_0"]
        if row["reader"] is None:  # it names a code the notes never mention: cut off at once
            assert row["abstained"] and q["id"] == "en1-023"
            continue
        assert row["reader"]["picked"] is None or row["reader"]["picked"] in row["reader"]["read"]
    assert "## The reader's decisions per rung" in (out / "report.md").read_text()


@pytest.mark.parametrize(("named_none", "said"), [((0.0, 0.0), True), ((0.0, 0.2), False)])
def test_the_report_says_when_the_checks_not_the_judge_refused(named_none, said):
    from eval.report import _decisions

    def rung(kind: str, none: float) -> dict:
        measured = {"value": none, "n": 5, "ci95": [none, none]}
        return {"type": kind, "answers": {"pick_right": measured, "judge_unanswerable": measured}}

    rungs = [rung("Q8_0", named_none[0]), rung("Q2_K", named_none[1])]
    text = "\n".join(_decisions({"rungs": rungs}))
    assert ("the refusals were made by the checks after its draft" in text) is said
    assert text.count("| Q8_0 |") == 1 and text.count("| Q2_K |") == 1


def test_several_models_share_one_table_and_one_plot(
    env: dict, sample_index: Path, model_path: Path, tmp_path: Path
):
    rows = {json.loads(line)["id"]: line for line in QA_PATH.read_text().splitlines()}
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(rows[i] + "\n" for i in PICK), encoding="utf-8")
    out, names = tmp_path / "out", ["smollm2-135m-instruct", model_path.stem]
    args = ["--source", f"{names[0]},{model_path}", "--types", "Q8_0", "--dataset", str(mine)]
    args += ["--index", str(sample_index), "--split", "all", "--limit", "3"]
    done = bitrag(env | {"BITRAG_READER": "on"}, *args, "--kld-tokens", "16", "--out", str(out))
    assert done.returncode == 0, done.stderr
    for name in names:  # each model's own eval, as a single-source run writes it
        assert results(out / name)["rungs"][0]["type"] == "Q8_0"
        assert (out / name / "report.md").is_file() and (out / name / "cache").is_dir()
    r = results(out)
    assert [m["model"] for m in r["models"]] == names
    assert [(x["model"], x["type"]) for x in r["rungs"]] == [(n, "Q8_0") for n in names]
    hits = [x["answers"]["keyword_hit"] for x in r["rungs"]]
    assert hits[0]["value"] == hits[1]["value"] and hits[1]["vs_top"]["diff"] == 0  # one file
    assert r["recommendation"]["model"] in names and r["recommendation"]["type"] == "Q8_0"
    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| model | rung |") and "pick holds the keywords" in table[0]
    assert [line.split(" | ")[0].removeprefix("| ") for line in table[2:]] == names
    assert (out / "accuracy_vs_bits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("sources", "says"),
    [
        ("smollm2-135m-instruct, smollm2-135m-instruct", "names smollm2-135m-instruct twice"),
        ("smollm2-135m-instruct,no-such-model", "no-such-model is neither a registered model"),
    ],
)
def test_a_duplicated_or_unknown_source_gives_one_line(run, tmp_path: Path, sources, says):
    done = run("eval", "--source", sources, "--types", "Q8_0", "--out", str(tmp_path / "out"))
    assert done.exit_code != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert not (tmp_path / "out").exists()


def test_imatrix_types_are_refused_with_one_line(run, tmp_path: Path):
    done = run("eval", "--types", "Q8_0,IQ2_XS", "--out", str(tmp_path / "out"))
    assert done.exit_code != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "IQ2_XS" in lines[0] and "importance matrix" in lines[0]
    assert "Traceback" not in done.output and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "does not exist"),
        ("this is not json\n", "line 1 is not JSON"),
        ('{"id": "x", "question": "q"}\n', "line 1: missing keys"),
    ],
)
def test_bad_dataset_gives_one_clear_line(run, tmp_path: Path, content, says):
    path = tmp_path / "qa.jsonl"
    if content is not None:
        path.write_text(content)
    done = run("eval", "--types", "Q8_0", "--dataset", str(path), "--out", str(tmp_path / "o"))
    assert done.exit_code != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and str(path) in lines[0], done.stderr
    assert not (tmp_path / "o").exists()


def _rung(name: str, bits: float, kld: float) -> dict:
    return {"type": name, "bits_per_weight": bits, "divergence": {"kld_mean": kld}}


def test_a_ladder_whose_divergence_does_not_fall_with_bits_is_flagged():
    monotone = [_rung("F16", 16, 0.0), _rung("Q8_0", 8.5, 0.006), _rung("Q2_K", 5.1, 0.54)]
    assert _inversions(monotone) is None
    inverted = [*monotone, _rung("Q5_K_M", 6.56, 0.098), _rung("Q4_K_M", 6.17, 0.075)]
    caveat = _inversions(inverted)
    assert "Q5_K_M (6.56 bpw, mean KLD 0.0980) > Q4_K_M (6.17 bpw, 0.0750)" in caveat
    assert "Q8_0" not in caveat
