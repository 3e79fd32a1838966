"""`bitrag doctor` checks the embedded model's sha256 and says what to do when it fails."""

import json
import shutil
from pathlib import Path


def test_doctor_reports_embedded_model_ok(run_json, model_path):
    report = run_json("doctor")
    assert report["model"]["name"] == "embedded"
    assert report["model"]["path"] == str(model_path)
    assert report["model"]["sha256_ok"] is True
    assert report["embedder"]["ok"] is True
    assert report["embedder"]["id"] == "all-MiniLM-L6-v2"
    assert (Path(report["embedder"]["path"]) / "config.json").is_file()
    assert report["index"]["status"] == "missing"
    assert "AVX2 = 1" in report["llama_cpp"]["system_info"]
    assert report["libraries"]["llama-cpp-python"] == "0.3.36"
    assert report["ok"] is True


def test_doctor_flags_changed_bytes(run, tmp_path, model_path):
    copy = tmp_path / model_path.name
    shutil.copyfile(model_path, copy)
    with copy.open("r+b") as f:  # flip one byte inside the tensor data
        f.seek(60_000_000)
        byte = f.read(1)
        f.seek(60_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = run("doctor", "--json", "--model", str(copy))
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["model"]["sha256_ok"] is False
    assert report["ok"] is False
    assert any("reinstall" in p["fix"] for p in report["problems"])
    refused = run("ask", "what is bfloat16?", "--model", str(copy))
    assert refused.exit_code != 0
    assert "sha256" in refused.stderr
