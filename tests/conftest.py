"""Shared fixtures: a private BITRAG_HOME per test, a CLI runner, the embedded model and
sample index, and tiny canned HTTP servers on 127.0.0.1."""

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import cli
from agent.runtime.model_file import embedded_model_path
from retrieval.paths import SAMPLE_CORPUS
from retrieval.store import ingest


@pytest.fixture(scope="session")
def converted_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of converted embedders (e5) for the whole session: converting is not what
    most tests test, and it costs seconds each time."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, converted_models: Path) -> Path:
    """Every test gets its own BITRAG_HOME and no model/embedder/thread overrides from the shell."""
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "models").symlink_to(converted_models, target_is_directory=True)
    monkeypatch.setenv("BITRAG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BITRAG_MODEL", raising=False)
    monkeypatch.delenv("BITRAG_EMBEDDER", raising=False)
    monkeypatch.setenv("BITRAG_THREADS", "")  # restored after the test, even if --threads set it
    return tmp_path / "home"


@pytest.fixture
def run():
    """Invoke the CLI in-process: run("ask", "...") -> click Result."""

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args))

    return invoke


@pytest.fixture
def run_json(run):
    """Invoke with --json, assert success and return the parsed output."""

    def invoke(*args: str) -> dict:
        result = run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return invoke


@pytest.fixture(scope="session")
def model_path() -> Path:
    return embedded_model_path()


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample corpus indexed once per test session (real loaders, Kiwi, MiniLM, FAISS)."""
    directory = tmp_path_factory.mktemp("sample") / "index"
    ingest([SAMPLE_CORPUS], directory)
    return directory


@pytest.fixture
def home_with_sample_index(home: Path, sample_index: Path) -> Path:
    """A BITRAG_HOME whose default index already holds the sample corpus."""
    shutil.copytree(sample_index, home / "index")
    return home


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp")


@pytest.fixture(scope="module")
def small_index(workdir: Path, request: pytest.FixtureRequest) -> Path:
    """The sample documents the module names in DOCS, indexed once for it (real loaders, BM25,
    MiniLM, FAISS)."""
    corpus = workdir / "corpus"
    corpus.mkdir()
    for name in request.module.DOCS:
        shutil.copy(SAMPLE_CORPUS / name, corpus / name)
    directory = workdir / "index"
    ingest([corpus], directory)
    return directory


@pytest.fixture(scope="module")
def file_root(workdir: Path) -> Path:
    """A root folder with a note, a nested note, a binary file and links that stay or leave."""
    root = workdir / "root"
    (root / "sub").mkdir(parents=True)
    (root / "note.txt").write_text("bitrag keeps notes offline.\n", encoding="utf-8")
    (root / "sub" / "deep.md").write_text("# Deep\n4-bit weights.\n", encoding="utf-8")
    (root / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    secret = workdir / "secret.txt"
    secret.write_text("outside the root\n", encoding="utf-8")
    (root / "escape.txt").symlink_to(secret)
    (root / "inside-link.txt").symlink_to(root / "note.txt")
    return root


def _last_logprobs(llm, prompt: list[int]):
    """Next-token log-probs after `prompt`, read from llama.cpp's last logits (`Llama.scores`
    stays unwritten without logits_all)."""
    import llama_cpp
    import numpy as np

    llm.reset()
    llm.eval(prompt)
    pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    logits = np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).astype(np.float64)
    return logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())


@pytest.fixture(scope="session")
def adapter_logprobs():
    """(base GGUF, adapter GGUF, prompt: token ids or text) -> the next-token log-probs of
    the plain base and of base+adapter, each on one thread, both models closed after."""
    import llama_cpp

    from eval.lora_gguf import open_with_adapter

    def measure(base: Path, adapter: Path, prompt: list[int] | str):
        settings = {"n_ctx": 128, "n_threads": 1, "n_threads_batch": 1}
        plain = llama_cpp.Llama(model_path=str(base), verbose=False, **settings)
        adapted = open_with_adapter(base, adapter, **settings)
        try:
            if isinstance(prompt, str):
                prompt = plain.tokenize(prompt.encode(), add_bos=False)
            return _last_logprobs(plain, prompt), _last_logprobs(adapted, prompt)
        finally:
            plain.close()
            adapted.close()

    return measure


class CannedServer:
    """A server on 127.0.0.1 that answers every POST with one canned reply after `delay`
    seconds and keeps each request's path, Authorization header and JSON body."""

    def __init__(
        self, status: int, body: bytes, content_type: str = "application/json", delay: float = 0
    ) -> None:
        self.received: list[tuple[str, str | None, dict]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sent = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, self.headers["Authorization"], json.loads(sent)))
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # a client that gave up waiting has closed the connection

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: nothing on stderr."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def requests(self) -> int:
        return len(self.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def canned() -> Iterator[Callable[..., CannedServer]]:
    """canned(status, body, content_type="application/json", delay=0) -> a running
    CannedServer, closed after the test."""
    servers: list[CannedServer] = []

    def start(*args, **kwargs) -> CannedServer:
        servers.append(CannedServer(*args, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
