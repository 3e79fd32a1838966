"""A LoRA adapter in use, with real parts: the embedded GGUF, llama.cpp, the CLI in process and
the sample-corpus index. The adapter is written here from seeded random A and B (a trained one
is tests/test_lora.py's business), with the sidecar `bitrag tune` writes. The runtime applies
it (next-token log-probs move) and keeps one model per adapter; `ask` and `chat --lora` answer
on base+adapter; `eval --lora` adds a TYPE+lora row per rung with its paired difference from
the rung alone; broken, foreign and server-bound adapters are refused with one line, before
anything runs."""

import json
import shutil
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from click.testing import CliRunner

from agent.cli import cli
from agent.runtime import llm as runtime
from agent.runtime.llm import load_llm
from eval.dataset import QA_PATH
from eval.lora import LoraConfig
from eval.lora_gguf import write_adapter, write_sidecar
from retrieval.errors import UserError
from retrieval.hashing import sha256_of

CONFIG = LoraConfig(rank=8, alpha=16.0, targets=("q_proj", "v_proj"), seed=0)
QUESTION = "How many mantissa bits does bfloat16 have?"
PICK = ["en1-003", "en1-004", "en1-023"]  # an answerable one, its follow-up, an unanswerable one
SPREAD = 0.06  # of A and B: enough to change what the 135M model writes
SERVER = "http://127.0.0.1:9/v1"


def random_adapter(path: Path, student: Path, seed: int) -> Path:
    """q and v of every block of the embedded model (576 wide, 3 kv heads x 64), seeded."""
    rng = np.random.default_rng(seed)
    pairs = {}
    for block in range(30):
        for name, out in (("attn_q", 576), ("attn_v", 192)):
            a = rng.normal(0.0, SPREAD, (CONFIG.rank, 576)).astype(np.float32)
            b = rng.normal(0.0, SPREAD, (out, CONFIG.rank)).astype(np.float32)
            pairs[f"blk.{block}.{name}.weight"] = (a, b)
    write_adapter(path, "llama", CONFIG.alpha, pairs)
    write_sidecar(path, student, CONFIG, 0, "0" * 64)
    return path


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    return random_adapter(tmp_path_factory.mktemp("lora") / "adapter.gguf", model_path, 0)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def next_logprobs(llm) -> np.ndarray:
    llama = llm._llama
    llama.reset()
    llama.eval(llama.tokenize(b"The number format bfloat16 keeps", add_bos=True))
    pointer = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
    logits = np.ctypeslib.as_array(pointer, shape=(llama.n_vocab(),)).astype(np.float64)
    return logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())


def test_the_runtime_applies_the_adapter_and_keeps_one_model_per_adapter(
    adapter: Path, model_path: Path, tmp_path: Path
):
    base, adapted = load_llm(), load_llm(lora=str(adapter))
    assert adapted is not base and load_llm(lora=str(adapter)) is adapted
    assert adapted.name == f"{model_path.name}+adapter.gguf"
    moved = np.abs(next_logprobs(adapted) - next_logprobs(base)).max()
    print(f"max |change| of a next-token log-prob with the adapter: {moved:.3f}")
    assert moved > 0.05
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(adapter, copy)
    first = load_llm(lora=str(copy))
    assert first is not adapted  # another file: its own model
    random_adapter(copy, model_path, seed=1)  # rewritten in place: another sha256
    second = load_llm(lora=str(copy))
    assert second is not first
    assert np.abs(next_logprobs(second) - next_logprobs(first)).max() > 0.05


def assert_loaded_once_with(adapter: Path) -> None:
    """The command loaded one model, and it is base+adapter: asked for again, it comes from
    the cache."""
    assert runtime._local.cache_info().misses == 1
    load_llm(lora=str(adapter))
    assert runtime._local.cache_info().misses == 1


def test_the_runtime_refuses_an_adapter_for_a_server(adapter: Path):
    with pytest.raises(UserError, match="--lora applies to a local model") as caught:
        load_llm(url=SERVER, lora=str(adapter))
    assert "\n" not in str(caught.value)


def test_ask_answers_on_base_plus_adapter(run_json, home_with_sample_index, adapter: Path):
    runtime._local.cache_clear()
    result = run_json("ask", QUESTION, "--lora", str(adapter))
    assert result["answer"] and result["mode"] in ("generated", "quoted")
    assert result["evidence"] and not result["abstained"]
    assert_loaded_once_with(adapter)


def test_chat_answers_on_base_plus_adapter(home_with_sample_index, adapter: Path):
    runtime._local.cache_clear()
    done = CliRunner().invoke(cli, ["chat", "--lora", str(adapter)], input=f"{QUESTION}\n/exit\n")
    assert done.exit_code == 0, done.output
    assert "bfloat16" in done.stdout
    assert_loaded_once_with(adapter)


@pytest.mark.parametrize("command", ["ask", "chat"])
def test_a_corrupt_adapter_is_one_line(
    run, home_with_sample_index, adapter: Path, tmp_path: Path, command: str
):
    cut = tmp_path / "cut.gguf"
    data = adapter.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    done = run(*(["ask", QUESTION] if command == "ask" else ["chat"]), "--lora", str(cut))
    assert done.exit_code != 0
    line = one_line(done.stderr)
    assert str(cut) in line and "truncated" in line


def test_ask_refuses_an_adapter_for_a_server(run, home_with_sample_index, adapter: Path):
    done = run("ask", QUESTION, "--llm-url", SERVER, "--lora", str(adapter))
    assert done.exit_code != 0
    assert "--lora applies to a local model" in one_line(done.stderr)


@pytest.fixture(scope="module")
def questions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = {json.loads(line)["id"]: line for line in QA_PATH.read_text().splitlines()}
    mine = tmp_path_factory.mktemp("qa") / "mine.jsonl"
    mine.write_text("".join(rows[i] + "\n" for i in PICK), encoding="utf-8")
    return mine


def eval_args(questions: Path, index: Path, out: Path) -> list[str]:
    return [
        "eval",
        *("--types", "Q8_0", "--dataset", str(questions), "--index", str(index)),
        *("--split", "all", "--limit", "3", "--kld-tokens", "16", "--out", str(out)),
    ]


def test_eval_adds_a_lora_row_per_rung_against_its_base(
    run, adapter: Path, questions: Path, sample_index: Path, model_path: Path, tmp_path: Path
):
    out = tmp_path / "out"
    done = run(*eval_args(questions, sample_index, out), "--lora", str(adapter))
    assert done.exit_code == 0, done.output
    r = json.loads((out / "results.json").read_text())
    lora = r["lora"]
    assert lora["path"] == str(adapter) and lora["sha256"] == sha256_of(adapter)
    assert lora["bytes"] == adapter.stat().st_size
    assert (lora["rank"], lora["alpha"], lora["steps"]) == (8, 16.0, 0)
    assert lora["student_sha256"] == sha256_of(model_path)
    assert [x["type"] for x in r["rungs"]] == ["Q8_0"]  # the ladder itself is unchanged
    [row] = lora["rows"]
    assert (row["type"], row["base"], row["evidence_differs"]) == ("Q8_0+lora", "Q8_0", 0)
    hit, base_hit = row["answers"]["keyword_hit"], r["rungs"][0]["answers"]["keyword_hit"]
    assert {"diff", "ci95"} <= set(hit["vs_base"]) and "vs_top" in hit and "vs_evidence" in hit
    assert hit["vs_base"]["diff"] == pytest.approx(hit["value"] - base_hit["value"], abs=1e-4)
    assert "vs_base" in row["answers"]["token_f1"]
    assert "vs_base" not in r["rungs"][0]["answers"]["keyword_hit"]
    assert all({"Q8_0", "Q8_0+lora", "evidence"} <= set(q["rows"]) for q in r["questions"])
    drafts = [(q["rows"]["Q8_0"]["draft"], q["rows"]["Q8_0+lora"]["draft"]) for q in r["questions"]]
    assert any(plain != adapted for plain, adapted in drafts)  # the row ran with the adapter
    print(f"keyword hit Q8_0 {base_hit['value']} -> +lora {hit['value']}: {lora['summary']}")
    report = (out / "report.md").read_text()
    section = report.split("## LoRA")[1]
    assert lora["summary"] in section and "| Q8_0 |" in section and "vs base" in section


@pytest.mark.parametrize(
    ("sidecar", "says"),
    [
        ({"student_sha256": "0" * 64}, "was trained on"),
        (None, "no readable sidecar"),
    ],
)
def test_eval_refuses_a_foreign_adapter_before_anything_runs(
    run, adapter: Path, questions: Path, sample_index: Path, tmp_path: Path, sidecar, says
):
    foreign = tmp_path / "foreign.gguf"
    shutil.copyfile(adapter, foreign)
    record = json.loads(adapter.with_suffix(".json").read_text())
    if sidecar is not None:
        foreign.with_suffix(".json").write_text(json.dumps(record | sidecar))
    out = tmp_path / "out"
    done = run(*eval_args(questions, sample_index, out), "--lora", str(foreign))
    assert done.exit_code != 0
    line = one_line(done.stderr)
    assert says in line and str(foreign) in line
    if sidecar is not None:
        assert "--source" in line and "bitrag tune --student" in line
    assert not out.exists()


def test_eval_refuses_lora_with_several_sources(run, adapter: Path, model_path: Path, tmp_path):
    out = tmp_path / "out"
    sources = f"smollm2-135m-instruct,{model_path}"
    done = run("eval", "--source", sources, "--lora", str(adapter), "--out", str(out))
    assert done.exit_code != 0
    assert "--lora takes one --source" in one_line(done.stderr)
    assert not out.exists()
