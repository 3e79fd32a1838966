"""The session store and the environment, through the real CLI: two `ask --session` processes
at once both keep their turn; a damaged, locked or unwritable sessions.sqlite, a closed stdin
for `chat`, and a malformed BITRAG_HOME mcp.json are each one line (or none) instead of an
exception; `bitrag eval` names each question source the index does not hold."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from agent.assemble import TURN_WAIT_ENV, session_history, turn_lock
from agent.cli import cli
from eval.dataset import QA_PATH, Question
from eval.question_set import missing_sources

BITRAG = Path(sys.executable).parent / "bitrag"
TIMEOUT_S = 600  # a subprocess loads torch / llama.cpp on 2 shared cores
RECURSION = "What is the default recursion limit of a LangGraph run?"
IQ2 = "How many bits per weight does IQ2_XXS use?"
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def _env() -> dict[str, str]:
    return os.environ | {"HF_HUB_OFFLINE": "1", "BITRAG_THREADS": "1"}


def _bitrag(*args: str, **kwargs) -> subprocess.Popen:
    """`bitrag ARGS` in its own process, as a user for whom file modes hold (root too)."""
    prefix = UNPRIVILEGED if os.geteuid() == 0 else []
    return subprocess.Popen(
        [*prefix, str(BITRAG), *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _done(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=TIMEOUT_S)
    return proc.returncode, out, err


def _one_line(stderr: str, *parts: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ") and "Traceback" not in stderr, stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def test_two_asks_at_once_in_one_session_both_keep_their_turn(run_json, home_with_sample_index):
    run_json("ask", RECURSION)  # converts the embedders once, before the race
    procs = [_bitrag("ask", q, "--session", "same", "--json") for q in (RECURSION, IQ2)]
    for proc in procs:
        code, out, err = _done(proc)
        assert code == 0 and json.loads(out)["answer"], err
    asked = [turn["question"] for turn in session_history("same")]
    assert sorted(asked) == sorted([RECURSION, IQ2])


def test_a_busy_session_is_waited_for_then_one_line(run, home_with_sample_index, monkeypatch):
    monkeypatch.setenv(TURN_WAIT_ENV, "1")
    with turn_lock("same"):  # another turn of the session is under way
        busy = run("ask", RECURSION, "--session", "same")
        other = run("ask", RECURSION, "--session", "other")
    assert busy.exit_code == 1 and other.exit_code == 0, other.output
    _one_line(busy.stderr, "session 'same' is busy", "ask again when it is done")
    assert session_history("same") == [] and len(session_history("other")) == 1
    assert run("ask", RECURSION, "--session", "same").exit_code == 0  # free again
    assert len(session_history("same")) == 1


def test_a_damaged_session_store_is_one_line_and_kept(run, home_with_sample_index):
    store = home_with_sample_index / "sessions.sqlite"
    junk = os.urandom(8192)
    store.write_bytes(junk)
    result = run("ask", RECURSION, "--session", "s")
    assert result.exit_code == 1 and result.stdout == ""
    _one_line(result.stderr, f"the session store {store} is damaged", f"mv {store} {store}.broken")
    assert store.read_bytes() == junk
    assert run("ask", RECURSION).exit_code == 0  # without --session nothing needs the store


def test_a_session_store_held_by_another_process_is_one_line_soon(run, home_with_sample_index):
    store = home_with_sample_index / "sessions.sqlite"
    assert run("ask", RECURSION, "--session", "s").exit_code == 0
    hold = "import sqlite3, sys\n"
    hold += f"db = sqlite3.connect({str(store)!r}, isolation_level=None)\n"
    hold += "db.execute('BEGIN EXCLUSIVE'); print('held', flush=True); sys.stdin.read()\n"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        began = time.monotonic()
        result = run("ask", RECURSION, "--session", "s")
        waited = time.monotonic() - began
    finally:
        holder.communicate("", timeout=60)
    assert result.exit_code == 1 and result.stdout == "" and waited < 30
    _one_line(result.stderr, f"the session store {store} is locked", "most likely another bitrag")
    assert len(session_history("s")) == 1  # the turn before is still there


def test_an_unwritable_bitrag_home_is_one_line_for_ask_session(home_with_sample_index):
    home = home_with_sample_index
    home.chmod(0o555)
    try:
        code, out, err = _done(_bitrag("ask", RECURSION, "--session", "s"))
        plain, answer, _ = _done(_bitrag("ask", RECURSION, "--json"))
    finally:
        home.chmod(0o755)
    assert code == 1 and out == ""
    _one_line(err, f"cannot keep sessions in {home}, which is not writable", "set BITRAG_HOME to")
    assert plain == 0 and json.loads(answer)["answer"]  # reading the home still works
    assert not (home / "sessions.sqlite").exists()


def test_chat_with_stdin_closed_ends_cleanly(home_with_sample_index):
    proc = _bitrag("chat", preexec_fn=lambda: os.close(0))
    code, out, err = _done(proc)
    assert code == 0 and err == "", err
    assert out.startswith("bitrag chat: ask about your notes")


def test_a_malformed_home_mcp_json_is_named_and_left_out(home_with_sample_index):
    config = home_with_sample_index / "mcp.json"
    config.write_text('{"mcpServers": {"tools": ', encoding="utf-8")
    said = f"MCP config {config} is not valid JSON"
    runner = CliRunner()
    asked = runner.invoke(cli, ["ask", "What is 6 * 7?", "--json"])
    assert asked.exit_code == 0, asked.output
    assert "42" in json.loads(asked.stdout)["answer"]
    chatted = runner.invoke(cli, ["chat"], input="/exit\n")
    assert chatted.exit_code == 0, chatted.output
    for result in (asked, chatted):
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], result.stderr
        assert lines[0].endswith("going on without its servers (fix it, or move it aside)")
    config.write_text('["not", "an object"]', encoding="utf-8")
    again = runner.invoke(cli, ["ask", "What is 6 * 7?"])
    assert again.exit_code == 0 and 'needs an object {"mcpServers"' in again.stderr


def _row(sources: list[str]) -> dict:
    """Question en1-003 of the sample set, with these sources."""
    lines = QA_PATH.read_text(encoding="utf-8").splitlines()
    return json.loads(next(line for line in lines if '"en1-003"' in line)) | {"sources": sources}


def _question(sources: list[str]) -> Question:
    return Question(**_row(sources))


def test_missing_sources_are_matched_as_retrieval_is_scored():
    indexed = ["/notes/pruning-and-sparsity.txt", "/notes/ko/가지치기-pruning.txt"]
    found = _question(["pruning-and-sparsity.txt", "ko/가지치기-pruning.txt"])
    lost = _question(["pruning-and-sparsity.txt", "gone.md", "other/pruning-and-sparsity.txt"])
    assert missing_sources([found], indexed) == []
    assert missing_sources([found, lost], indexed) == [
        {"id": "en1-003", "source": "gone.md"},
        {"id": "en1-003", "source": "other/pruning-and-sparsity.txt"},
    ]


def test_eval_names_each_source_the_index_does_not_hold(sample_index: Path, tmp_path: Path):
    mine, out = tmp_path / "mine.jsonl", tmp_path / "out"
    row = _row(["pruning-and-sparsity.txt", "no-such-note.md"])
    mine.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    args = ["eval", "--types", "Q8_0", "--dataset", str(mine), "--index", str(sample_index)]
    args += ["--split", "all", "--kld-tokens", "16", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True, text=True, env=_env(), timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("Warning: ")]
    assert warned == [
        f"Warning: question en1-003: source no-such-note.md is not in the index {sample_index}; "
        "finding or citing it counts as a miss"
    ]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Sources not in the index" in report and "- en1-003: `no-such-note.md`" in report
    assert json.loads((out / "results.json").read_text())["missing_sources"] == [
        {"id": "en1-003", "source": "no-such-note.md"}
    ]


def test_an_unwritable_bitrag_home_answers_from_another_index(sample_index, tmp_path, monkeypatch):
    home = tmp_path / "read-only-home"  # nothing in it yet: the e5 model is converted elsewhere
    home.mkdir(mode=0o555)
    monkeypatch.setenv("BITRAG_HOME", str(home))
    code, out, err = _done(_bitrag("ask", RECURSION, "--index", str(sample_index), "--json"))
    assert code == 0, err
    assert json.loads(out)["evidence"] and list(home.iterdir()) == []


def test_models_add_in_an_unwritable_home_is_one_line(home, model_path, monkeypatch):
    home.chmod(0o555)
    try:
        code, out, err = _done(_bitrag("models", "add", str(model_path), "--name", "mine"))
    finally:
        home.chmod(0o755)
    assert code == 1 and out == ""
    _one_line(err, f"cannot register models in {home}, which is not writable", "--model")
    assert not (home / "models.json").exists()
