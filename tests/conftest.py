"""Shared fixtures: a private BITRAG_HOME per test and a CLI runner."""

import json
import shutil
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
