"""Hardening of the runtime, doctor, models and index format, each through the real CLI: a
server that streams forever, more threads than cores, an index from a newer bitrag, a broken
session store, a registered name taken, a directory as --model, a folder in quantize's way."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import llama_cpp
import pytest

from agent.runtime.llm import LocalLLM
from retrieval.store import FORMAT_VERSION

BITRAG = Path(sys.executable).with_name("bitrag")
QUESTION = "How many mantissa bits does bfloat16 have?"
OUTER_TIMEOUT = 300  # seconds: only a hang gets near it (a normal run takes ~20 s)
CORES = len(os.sched_getaffinity(0))


class EndlessStream:
    """An OpenAI-compatible server on 127.0.0.1 whose streamed chat never ends: one SSE event
    every 10 ms and never [DONE]. `content` is each event's text ("" sends empty deltas)."""

    def __init__(self, content: str) -> None:
        self.sent = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler) -> None:
                body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
                if body.get("stream"):
                    self._stream(handler, content)
                elif handler.path.endswith("/tokenize"):
                    self._reply(handler, {"tokens": body["input"].split()})
                else:
                    self._reply(handler, {"choices": [{"message": {"content": "No."}}]})

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: nothing on stderr."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, data: dict) -> None:
        raw = json.dumps(data).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)

    def _stream(self, handler: BaseHTTPRequestHandler, content: str) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        delta = {"content": content} if content else {}
        event = f"data: {json.dumps({'choices': [{'delta': delta}]})}\n\n".encode()
        try:
            while True:
                handler.wfile.write(event)
                handler.wfile.flush()
                self.sent += 1
                time.sleep(0.01)
        except OSError:  # the client hung up
            return

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def endless() -> Iterator[type[EndlessStream]]:
    servers: list[EndlessStream] = []

    def start(content: str) -> EndlessStream:
        servers.append(EndlessStream(content))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def bitrag(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The real CLI in its own process; a hang fails the test instead of stalling it."""
    environ = os.environ | {"BITRAG_HOME": str(home), "HF_HUB_OFFLINE": "1"} | env
    try:
        return subprocess.run(
            [str(BITRAG), *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=OUTER_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"bitrag {' '.join(args)} still running after {OUTER_TIMEOUT} s")


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def test_a_stream_that_never_ends_is_cut_by_the_timeout(home_with_sample_index, endless):
    server = endless("")  # events without text: only the timeout can end this
    done = bitrag(
        home_with_sample_index,
        "ask",
        QUESTION,
        "--llm-url",
        server.url,
        "--json",
        BITRAG_LLM_TIMEOUT="3",
        BITRAG_THREADS="1",
    )
    assert done.returncode == 1
    assert one_error_line(done.stderr) == (
        f"Error: LLM server at {server.url} did not finish its answer within 3 s"
        " (BITRAG_LLM_TIMEOUT)"
    )
    assert server.sent > 0 and done.stdout == ""


def test_a_stream_that_ignores_max_tokens_ends_at_the_token_limit(home_with_sample_index, endless):
    server = endless("word ")  # never a finished sentence, never [DONE]
    done = bitrag(
        home_with_sample_index,
        "ask",
        QUESTION,
        "--llm-url",
        server.url,
        "--json",
        BITRAG_LLM_TIMEOUT="600",
        BITRAG_THREADS="1",
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["mode"] in ("generated", "quoted", "abstained")
    assert 96 <= server.sent < 2000  # MAX_ANSWER_TOKENS (agent/nodes.py) pieces were read


def test_threads_beyond_the_cores_are_clamped_and_said_once(home, model_path, monkeypatch):
    done = bitrag(home, "--threads", "999", "doctor", "--json")
    assert done.returncode == 0, done.stderr
    llama = json.loads(done.stdout)["llama_cpp"]
    assert llama["threads"] == CORES and llama["cores"] == CORES
    assert llama["threads_from"] == "--threads" and llama["threads_asked"] == 999
    assert llama["threads_clamped"] is True
    said = [line for line in done.stderr.splitlines() if "999 threads" in line]
    assert said == [
        f"bitrag: 999 threads asked for (--threads or BITRAG_THREADS), but only {CORES} cores"
        f" are available; using {CORES}"
    ]
    monkeypatch.setenv("BITRAG_THREADS", "999")
    llm = LocalLLM(model_path)
    assert llm.threads == CORES == llama_cpp.llama_n_threads(llm._llama.ctx)


def test_doctor_names_where_the_thread_count_comes_from(run, monkeypatch):
    def threads(*args: str) -> dict:
        result = run(*args, "doctor", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["llama_cpp"]

    assert threads()["threads_from"] == "cores idle now"
    flag = threads("--threads", "1")
    assert (flag["threads"], flag["threads_asked"], flag["threads_from"]) == (1, 1, "--threads")
    assert flag["threads_clamped"] is False
    monkeypatch.setenv("BITRAG_THREADS", "1")
    assert threads()["threads_from"] == "BITRAG_THREADS"
    assert "threads:  1 (BITRAG_THREADS=1)" in run("doctor").stdout


def _built_index(run, tmp_path: Path) -> tuple[Path, Path]:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Tea\n\nGreen tea is steeped at 80 degrees.\n")
    index = tmp_path / "index"
    assert run("ingest", str(notes), "--index", str(index)).exit_code == 0
    return notes, index


def _set_format(index: Path, version: int) -> dict[Path, bytes]:
    """Write `version` into the live generation's manifest; every file's bytes after that."""
    manifest = index / (index / "CURRENT").read_text().strip() / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"format_version": version}))
    return {p: p.read_bytes() for p in sorted(index.rglob("*")) if p.is_file()}


def test_an_index_from_a_newer_bitrag_is_kept_and_upgrade_advised(run, tmp_path):
    notes, index = _built_index(run, tmp_path)
    before = _set_format(index, FORMAT_VERSION + 1)
    for args in (("search", "tea"), ("ingest", str(notes))):
        result = run(*args, "--index", str(index))
        assert result.exit_code == 1
        line = one_error_line(result.stderr)
        assert f"has format {FORMAT_VERSION + 1}, newer than" in line
        assert "upgrade bitrag" in line and f"delete {index}" not in line
    doctor = json.loads(run("doctor", "--index", str(index), "--json").stdout)
    assert doctor["index"]["status"] == "newer format"
    assert {p: p.read_bytes() for p in sorted(index.rglob("*")) if p.is_file()} == before
    _set_format(index, FORMAT_VERSION - 1)  # an older format still gets the rebuild advice
    line = one_error_line(run("search", "tea", "--index", str(index)).stderr)
    assert f"delete {index} and run `bitrag ingest PATH --index {index}`" in line


def test_doctor_checks_the_session_store(run, home):
    from agent.assemble import session_store

    store = session_store("work")  # the store `--session` writes, with its tables
    store.conn.close()  # as when no bitrag runs: its WAL is folded in, the file alone holds it
    report = json.loads(run("doctor", "--json").stdout)
    assert report["sessions"] == {
        "path": str(home / "sessions.sqlite"),
        "status": "ok",
        "sessions": 0,
    }
    garbage = os.urandom(8192)
    (home / "sessions.sqlite").write_bytes(garbage)
    result = run("doctor")
    assert result.exit_code == 1 and "all good" not in result.stdout
    problem = f"PROBLEM: session store {home / 'sessions.sqlite'} is unreadable or corrupt"
    assert problem in result.stdout and "mv " in result.stdout
    assert (home / "sessions.sqlite").read_bytes() == garbage  # opened read-only


def test_a_taken_model_name_is_refused_unless_forced(run, run_json, tmp_path, model_path, home):
    first, second = tmp_path / "first.gguf", tmp_path / "second.gguf"
    for path in (first, second):
        shutil.copyfile(model_path, path)
    run_json("models", "add", str(first), "--name", "mine")
    run_json("models", "add", str(first), "--name", "mine")  # the same file again is fine
    result = run("models", "add", str(second), "--name", "mine")
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        f"Error: model name 'mine' already names {first}: pick another --name, or pass --force"
        f" to point it at {second}"
    )
    registry = json.loads((home / "models.json").read_text())["models"]
    assert [(e["name"], e["path"]) for e in registry] == [("mine", str(first))]
    result = run("models", "add", str(second), "--name", "mine", "--force")
    assert result.exit_code == 0
    assert result.stderr == f"model name 'mine' now names {second}, not {first}\n"
    registry = json.loads((home / "models.json").read_text())["models"]
    assert [(e["name"], e["path"]) for e in registry] == [("mine", str(second))]


def test_a_directory_as_model_is_named_as_a_directory(run, home_with_sample_index, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for args in (("ask", QUESTION, "--model", str(folder)), ("models", "add", str(folder))):
        result = run(*args)
        assert result.exit_code == 1
        assert one_error_line(result.stderr) == (
            f"Error: model path {folder} is a directory, not a model file: give the path of a"
            " .gguf file"
        )
    (folder / "small.gguf").write_bytes(b"GGUF")
    line = one_error_line(run("ask", QUESTION, "--model", str(folder)).stderr)
    assert line.endswith(f", e.g. {folder / 'small.gguf'}")


def test_quantize_refuses_a_folder_in_the_way_before_writing(run, tmp_path, model_path):
    out = tmp_path / "out"
    blocker = out / f"{model_path.stem}.Q8_0.gguf"
    blocker.mkdir(parents=True)
    (blocker / "keep.txt").write_text("mine")
    result = run("quantize", str(model_path), "--types", "Q4_0,Q8_0", "--out", str(out))
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        f"Error: cannot write the Q8_0 output: {blocker} is a folder; move it away or pass"
        " another --out"
    )
    assert [p.name for p in out.iterdir()] == [blocker.name]  # Q4_0 was not written either
    assert (blocker / "keep.txt").read_text() == "mine"
