"""The rungs of an eval: quantized once (cached), described from their tensors, measured
in a subprocess each (eval/rung_worker.py).

A rung file is reused when its sidecar says it was made from the same source (sha256)
with the same llama.cpp, importance matrix (sha256 of its contents) and removed layers; its
description holds file bytes, true bits per weight (tensor
bytes * 8 / elements) and the tensor types it actually uses, which tells when a label hides
a fallback (576-wide rows are not multiples of 256, so K-quants fall back to Q4_0/Q5_0...).
"""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from agent.runtime.gguf_header import read_header
from agent.runtime.model_file import inspect_gguf
from eval import eval_cache
from eval.quantize import output_path, quantize
from retrieval.errors import UserError

if TYPE_CHECKING:
    from eval.imatrix import Imatrix

WORKER_TIMEOUT_S = 3600


def llama_cpp_version() -> str:
    import llama_cpp

    return str(llama_cpp.__version__)


def tensor_types(path: Path) -> dict[str, int]:
    from gguf.constants import GGMLQuantizationType

    counts = Counter(GGMLQuantizationType(k).name for k in read_header(path).tensor_types)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def quantized(
    source: Path,
    source_sha: str,
    name: str,
    models: Path,
    memo: Path,
    imatrix: "tuple[Imatrix, str] | None" = None,
    prune: tuple[int, ...] = (),
    tag: str = "",
) -> Path:
    """The source requantized to `name` under `models` (with the importance matrix of
    `imatrix`, (matrix, sha256 of its .dat file); without the `prune` layers; named with `tag`:
    eval/quantize.py `output_path`), reused when its sidecar says it was already made so: the
    same source, type, llama.cpp, imatrix sha256 and removed layers."""
    path = output_path(source, name, models, prune, tag)
    sidecar = models / f".{path.name}.json"
    wanted = {
        "source_sha256": source_sha,
        "type": name,
        "llama_cpp": llama_cpp_version(),
        "imatrix_sha256": imatrix[1] if imatrix else None,
        "pruned_layers": list(prune),
    }
    made = eval_cache.read_json(sidecar)
    if path.is_file() and made and {k: made.get(k) for k in wanted} == wanted:
        if made.get("bytes") == path.stat().st_size:
            return path
    matrix = imatrix[0] if imatrix else None
    done = quantize(source, [name], models, imatrix=matrix, prune=tuple(prune), tag=tag)
    if done["outputs"][0]["pruned_layers"] != list(prune):
        raise RuntimeError(f"quantize removed {done['outputs'][0]['pruned_layers']}, not {prune}")
    eval_cache.write_json(sidecar, wanted | {"bytes": path.stat().st_size})
    eval_cache.sha256_file(path, memo)
    return path


def describe(name: str, path: Path, memo: Path, quant_type: str | None = None) -> dict:
    """The rung's row: `type` is its label (unique in the eval), `quant_type` the llama.cpp
    type it was quantized to (the label itself for a plain rung)."""
    info = inspect_gguf(path)
    types = tensor_types(path)
    return {
        "type": name,
        "quant_type": quant_type or name,
        "path": str(path),
        "bytes": info.size,
        "bits_per_weight": round(info.bits_per_weight, 4),
        "tensor_types": types,
        "n_tensor_types": len(types),
        "sha256": eval_cache.sha256_file(path, memo),
    }


def measure(spec: dict, spec_path: Path) -> dict:
    """Run the worker on `spec` in a fresh Python; its result, or a UserError with its reason."""
    eval_cache.write_json(spec_path, spec)
    repo = str(Path(__file__).resolve().parent.parent)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "eval.rung_worker", str(spec_path)],
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise UserError(
            f"measuring {Path(spec['model']).name} took over {WORKER_TIMEOUT_S} s"
        ) from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise UserError(f"measuring {Path(spec['model']).name} failed: {reason}")
    result = json.loads(Path(spec["out"]).read_text())
    spec_path.unlink(missing_ok=True)
    return result
