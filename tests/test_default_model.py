"""Which model answers when none is named: the measured default pack once it is installed,
else the embedded model; a model, server or adapter named anywhere wins. Installing a pack
that is in place already downloads nothing."""

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from agent import assemble
from agent.assemble import DEFAULT_PACK, default_model, make_agent, reader_on
from agent.runtime import packs
from retrieval.paths import bitrag_home
from retrieval.store import Index


@pytest.fixture
def installed(run, home: Path, model_path: Path) -> Path:
    """A real GGUF registered under the default pack's name (a copy of the embedded model, so
    the test needs no 1.1 GB download)."""
    copy = home / "pack-copy.gguf"
    shutil.copyfile(model_path, copy)
    added = run("models", "add", str(copy), "--name", DEFAULT_PACK, "--languages", "en,ko")
    assert added.exit_code == 0, added.output
    return copy


def test_without_the_pack_the_embedded_model_answers(sample_index: Path):
    assert default_model(None, None) is None
    assert make_agent(Index.load(sample_index)).context.reader is False  # the 135M


def test_the_installed_pack_answers_by_default(installed: Path, sample_index: Path):
    assert default_model(None, None) == DEFAULT_PACK
    context = make_agent(Index.load(sample_index)).context
    assert context.model_languages == frozenset({"en", "ko"})
    assert context.reader is False  # a 135M model under the pack's name: too small to read


def test_a_model_of_a_billion_weights_or_more_is_the_reader(
    installed: Path, sample_index: Path, monkeypatch: pytest.MonkeyPatch
):
    """The GGUF header's weight count decides (the embedded model holds 134,515,008)."""
    monkeypatch.delenv("BITRAG_READER", raising=False)
    assert assemble.READER_MIN_PARAMETERS == 1_000_000_000
    assert make_agent(Index.load(sample_index)).context.reader is False
    monkeypatch.setattr(assemble, "READER_MIN_PARAMETERS", 134_515_008)
    assert make_agent(Index.load(sample_index)).context.reader is True
    assert reader_on(134_515_008) is True and reader_on(None) is False  # None: a server


def test_doctor_checks_the_model_ask_answers_with(run, run_json, installed: Path):
    report = run_json("doctor")
    assert report["model"]["name"] == DEFAULT_PACK
    assert report["model"]["path"] == str(installed) and report["model"]["loads"] is True
    assert f"model:    {DEFAULT_PACK}: {installed} " in run("doctor").output


def test_a_named_model_server_or_adapter_keeps_its_own_choice(
    installed: Path, monkeypatch: pytest.MonkeyPatch
):
    assert default_model("http://127.0.0.1:9/v1", None) is None
    assert default_model(None, "adapter.gguf") is None
    monkeypatch.setenv("BITRAG_MODEL", "other.gguf")
    assert default_model(None, None) is None
    monkeypatch.delenv("BITRAG_MODEL")
    monkeypatch.setenv("BITRAG_LLM_URL", "http://127.0.0.1:9/v1")
    assert default_model(None, None) is None


def test_a_registered_pack_whose_file_is_gone_is_not_the_default(installed: Path):
    installed.unlink()
    assert default_model(None, None) is None


def test_installing_a_pack_that_is_in_place_downloads_nothing(monkeypatch: pytest.MonkeyPatch):
    gguf = bitrag_home() / "models" / "in-place.gguf"
    gguf.parent.mkdir(parents=True, exist_ok=True)
    gguf.write_bytes(b"GGUF in place")
    pack = replace(
        packs.get_pack(DEFAULT_PACK),
        file=gguf.name,
        sha256=hashlib.sha256(gguf.read_bytes()).hexdigest(),
    )
    monkeypatch.setattr(packs, "get_pack", lambda name: pack)
    said: list[str] = []
    assert packs.install(DEFAULT_PACK, said.append) == gguf
    assert said == [f"{pack.name} is installed already and its GGUF verified: nothing to download"]
