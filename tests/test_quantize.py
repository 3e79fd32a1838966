"""The quantization ladder with real llama.cpp: every rung loads and generates, bits per weight
fall along the ladder, and `bitrag quantize` refuses bad input with one line and no leftovers."""

import json
import subprocess
import sys
from pathlib import Path

import llama_cpp
import pytest
from click.testing import CliRunner, Result
from gguf import GGUFReader

from agent.cli import cli
from eval.quantize import (
    IQ_WITHOUT_IMATRIX,
    LADDER,
    NEEDS_IMATRIX,
    bits_per_weight,
    ceiling_note,
    file_type,
    quantize,
    source_type,
)
from retrieval.errors import UserError


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> dict:
    """The embedded model quantized once to every LADDER type."""
    out_dir = tmp_path_factory.mktemp("ladder")
    messages: list[str] = []
    result = quantize(model_path, list(LADDER), out_dir, messages.append)
    result["messages"] = messages
    result["out_dir"] = out_dir
    return result


def by_type(ladder: dict) -> dict[str, dict]:
    return {row["type"]: row for row in ladder["outputs"]}


def test_every_ladder_type_is_written_with_its_reported_size(ladder: dict, model_path: Path):
    rows = by_type(ladder)
    assert list(rows) == list(LADDER)
    assert len(ladder["messages"]) == len(LADDER)
    for name, row in rows.items():
        path = Path(row["path"])
        assert path.name == f"{model_path.stem}.{name}.gguf"
        assert path.stat().st_size == row["bytes"]
    assert sorted(p.name for p in ladder["out_dir"].iterdir()) == sorted(
        Path(row["path"]).name for row in ladder["outputs"]
    )  # no temp files left behind


def test_every_ladder_output_loads_and_generates(ladder: dict):
    # One thread: with two spinning ggml threads on a busy 2-core machine a 6-token
    # generation sometimes stalls for 20+ s; one thread keeps this test at ~1 s.
    for row in ladder["outputs"]:
        llm = llama_cpp.Llama(
            model_path=row["path"], n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False
        )
        try:
            out = llm.create_completion("The capital of France is", max_tokens=6, temperature=0)
        finally:
            llm.close()
        assert out["usage"]["completion_tokens"] > 0, row["type"]
        assert out["choices"][0]["text"].strip(), row["type"]


def test_bits_per_weight_decreases_along_the_ladder(ladder: dict):
    """Strictly falling, with one measured exception on this model: SmolLM2's 576-wide rows
    are not a multiple of the 256-weight k-quant super-block, so llama.cpp falls back to
    legacy types for 180 of 272 tensors and Q3_K_M ends up mostly Q4_0/Q5_0, slightly
    above Q4_0. The exception is asserted, so a llama.cpp change that fixes it shows up."""
    bits = {row["type"]: row["bits_per_weight"] for row in ladder["outputs"]}
    order = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q4_0", "Q2_K"]
    assert sorted(bits, key=bits.get, reverse=True) == order, bits
    assert [t for t in LADDER if t not in ("Q4_0", "Q3_K_M")] == [
        t for t in order if t not in ("Q4_0", "Q3_K_M")
    ]
    assert bits["Q3_K_M"] - bits["Q4_0"] < 0.2  # the fallback gap, not a real inversion


def test_bits_and_type_come_from_the_tensors_and_metadata(ladder: dict, model_path: Path):
    rows = by_type(ladder)
    checked = [(model_path, ladder["source"])] + [
        (Path(rows[name]["path"]), rows[name]) for name in ("F16", "Q2_K")
    ]
    for path, row in checked:
        reader = GGUFReader(path, "r")
        n_bytes = sum(int(t.n_bytes) for t in reader.tensors)
        n_elements = sum(int(t.n_elements) for t in reader.tensors)
        assert row["bits_per_weight"] == pytest.approx(n_bytes * 8 / n_elements, abs=1e-4)
        assert row["bits_per_weight"] != pytest.approx(path.stat().st_size * 8 / n_elements)
        file_type_value = int(reader.fields["general.file_type"].contents())
        assert file_type_value == file_type(row["type"])
    assert source_type(Path(rows["Q4_K_M"]["path"])) == "Q4_K_M"
    assert 16.0 <= rows["F16"]["bits_per_weight"] < 16.1  # 1-d norm tensors stay F32


def test_source_and_ceiling_note(ladder: dict, model_path: Path):
    assert ladder["source"] == {
        "path": str(model_path),
        "type": "Q4_1",
        "bits_per_weight": pytest.approx(5.7437, abs=1e-3),
        "bytes": model_path.stat().st_size,
    }
    note = ladder["ceiling_note"]
    assert "Q4_1" in note and "precision" in note and "\n" not in note
    assert ceiling_note("model.F16.gguf", "F16", 16.0, quantized=False) == ""


def test_file_type_names():
    assert file_type("Q4_K_M") == llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert file_type("q8_0") == llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    assert file_type("F32") == llama_cpp.LLAMA_FTYPE_ALL_F32
    for name in (*IQ_WITHOUT_IMATRIX, *NEEDS_IMATRIX):
        assert file_type(name.lower()) == getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}")
    with pytest.raises(UserError, match=r"unknown quantization type 'Q9_9'; known: .*Q4_K_M"):
        file_type("Q9_9")


def test_imatrix_only_type_is_refused_before_anything_is_written(tmp_path: Path, model_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="IQ2_XS needs an importance matrix"):
        quantize(model_path, ["Q8_0", "IQ2_XS"], out)
    assert not out.exists() or list(out.iterdir()) == []


INTERRUPT_SCRIPT = """
import os, signal, sys, threading, time
from pathlib import Path
from eval.quantize import quantize

signal.signal(signal.SIGINT, signal.default_int_handler)

def ctrl_c_soon():
    time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)

def progress(message):
    if message.startswith("[2/"):
        threading.Thread(target=ctrl_c_soon, daemon=True).start()

try:
    quantize(Path(sys.argv[1]), ["Q8_0", "Q4_K_M", "Q2_K"], Path(sys.argv[2]), progress)
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_ctrl_c_mid_ladder_keeps_finished_outputs_and_no_temp_file(tmp_path: Path, model_path):
    """A Ctrl-C during the second type stops the run; only the first, complete output stays."""
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPT_SCRIPT, str(model_path), str(out)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 130, done.stderr
    assert [p.name for p in out.iterdir()] == [f"{model_path.stem}.Q8_0.gguf"]


# --- through the CLI: `bitrag quantize SRC --types ... --out DIR [--json]` ---


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["quantize", *args])


def assert_one_line_error(result: Result, *names: str) -> None:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    for name in names:
        assert name in lines[0], lines[0]


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


def truncated_copy(model_path: Path, tmp_path: Path, n_bytes: int) -> Path:
    path = tmp_path / f"cut{n_bytes}.gguf"
    with model_path.open("rb") as f:
        path.write_bytes(f.read(n_bytes))
    return path


def test_cli_missing_source(tmp_path: Path):
    out = tmp_path / "out"
    result = invoke(str(tmp_path / "nope.gguf"), "--types", "Q8_0", "--out", str(out))
    assert_one_line_error(result, "nope.gguf")
    assert_nothing_written(out)


def test_cli_non_gguf_source(tmp_path: Path):
    src = tmp_path / "notes.gguf"
    src.write_text("just some notes, not a model\n")
    out = tmp_path / "out"
    result = invoke(str(src), "--types", "Q8_0", "--out", str(out))
    assert_one_line_error(result, "notes.gguf")
    assert_nothing_written(out)


@pytest.mark.parametrize("n_bytes", [4096, 50_000_000])
def test_cli_truncated_source(tmp_path: Path, model_path: Path, n_bytes: int):
    src = truncated_copy(model_path, tmp_path, n_bytes)
    out = tmp_path / "out"
    result = invoke(str(src), "--types", "Q8_0,Q4_K_M", "--out", str(out))
    assert_one_line_error(result, src.name)
    assert "truncated" in result.stderr
    assert_nothing_written(out)


def test_cli_unknown_type(tmp_path: Path, model_path: Path):
    out = tmp_path / "out"
    result = invoke(str(model_path), "--types", "Q8_0,Q9_9", "--out", str(out))
    assert_one_line_error(result, "Q9_9")
    assert_nothing_written(out)


def test_cli_type_needing_an_imatrix(tmp_path: Path, model_path: Path):
    out = tmp_path / "out"
    result = invoke(str(model_path), "--types", "Q8_0,IQ2_XXS", "--out", str(out))
    assert_one_line_error(result, "IQ2_XXS")
    assert_nothing_written(out)


def test_cli_unwritable_output_folder(tmp_path: Path, model_path: Path):
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file where a folder should be\n")
    out = blocker / "sub"
    result = invoke(str(model_path), "--types", "Q8_0", "--out", str(out))
    assert_one_line_error(result, str(out))
    assert blocker.read_text() == "a regular file where a folder should be\n"
    assert [p.name for p in tmp_path.iterdir() if p.name != "home"] == ["afile"]


def test_cli_json_success(tmp_path: Path, model_path: Path, capfd: pytest.CaptureFixture):
    out = tmp_path / "out"
    result = invoke(str(model_path), "--types", "Q8_0,Q4_K_M", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"source", "outputs", "ceiling_note"} <= set(report)
    assert {"path", "type", "bits_per_weight", "bytes"} <= set(report["source"])
    assert "Q4_1" in report["ceiling_note"]
    assert [row["type"] for row in report["outputs"]] == ["Q8_0", "Q4_K_M"]
    for row in report["outputs"]:
        assert set(row) >= {"type", "path", "bytes", "bits_per_weight"}
        path = Path(row["path"])
        assert path.parent == out and path.stat().st_size == row["bytes"]
        assert row["bits_per_weight"] == pytest.approx(bits_per_weight(path), abs=1e-4)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        Path(row["path"]).name for row in report["outputs"]
    )
    assert result.stderr == ""
    leaked = capfd.readouterr()
    assert "llama" not in leaked.err and "llama" not in leaked.out  # llama.cpp's log stays hidden
