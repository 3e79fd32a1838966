"""Convert the verified e5 file once into a model folder under BITRAG_HOME.

The folder is keyed by the file's sha256, written into a temporary directory
and renamed into place, so a crash never leaves a half-written model behind. When
BITRAG_HOME cannot be written (a read-only home, `ask --index` elsewhere), the folder is
written into a private temporary directory instead, removed when the process ends.
Encoder weights are dequantized to float32; the token table keeps its Q4
blocks (see retrieval.embedders.e5_module). numpy only: no torch is needed to convert.
"""

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from retrieval.embedders.e5_file import F32, E5File, open_e5
from retrieval.embedders.e5_tokenizer import tokenizer_json
from retrieval.paths import bitrag_home

MODEL_ID = "multilingual-e5-small-q4"
MODULE_TYPE = "retrieval.embedders.e5_module.E5Encoder"
FOLDER_LAYOUT = 2  # 2: MODULE_TYPE under retrieval.embedders (a folder of layout 1 names the old)
LAYER_PARTS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
EMBEDDING_PARTS = {
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


def model_dir(sha256: str) -> Path:
    return bitrag_home() / "models" / f"{MODEL_ID}-{sha256[:16]}-l{FOLDER_LAYOUT}"


def is_converted(folder: Path) -> bool:
    return (folder / "modules.json").is_file()


def ensure_converted(source: Path, folder: Path) -> Path:
    """The converted folder for `source`, written now if it is not there yet (into a private
    temporary folder when `folder`'s parent cannot be written)."""
    if is_converted(folder):
        return folder
    e5 = open_e5(source)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    except PermissionError:
        folder = _private_folder(folder.name)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        write_folder(e5, tmp)
        os.rename(tmp, folder)
    except OSError:
        if not is_converted(folder):  # not a lost race with another process
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _private_folder(name: str) -> Path:
    """`name` inside a new temporary folder only this user can read, removed at exit."""
    parent = Path(tempfile.mkdtemp(prefix="bitrag-e5-"))
    atexit.register(shutil.rmtree, parent, ignore_errors=True)
    return parent / name


def write_folder(e5: E5File, out: Path) -> None:
    from safetensors.numpy import save_file

    save_file(weights(e5), str(out / "model.safetensors"))
    (out / "tokenizer.json").write_text(tokenizer_json(e5.vocab), encoding="utf-8")
    _write_json(out / "config.json", bert_config(e5))
    (out / "1_Pooling").mkdir()
    _write_json(
        out / "1_Pooling" / "config.json",
        {"word_embedding_dimension": e5.header.hidden, "pooling_mode_mean_tokens": True},
    )
    _write_json(out / "modules.json", _modules())
    prompts = {"query": "query: ", "passage": "passage: "}
    _write_json(out / "config_sentence_transformers.json", {"prompts": prompts})
    _write_json(out / "source.json", {"file": str(e5.path), "sha256": e5.sha256})


def _write_json(path: Path, obj: object) -> None:
    with path.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _modules() -> list[dict]:
    return [
        {"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]


def bert_config(e5: E5File) -> dict:
    h = e5.header
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": h.vocab_rows,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ffn,
        "hidden_act": "gelu",
        "max_position_embeddings": h.positions,
        "type_vocab_size": h.token_types,
        "layer_norm_eps": h.eps,
        "pad_token_id": e5.vocab.pad,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


def dequantize(blocks: np.ndarray) -> np.ndarray:
    """Q4 blocks -> float32 weights, 32 per block (low nibbles first, then high)."""
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32) - 8.0
    return (nibbles * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def _tensor(e5: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    data = e5.array(name)
    flat = data if e5.tensors[name].dtype == F32 else dequantize(data)
    return np.ascontiguousarray(flat.reshape(shape), dtype=np.float32)


def weights(e5: E5File) -> dict[str, np.ndarray]:
    h = e5.header
    out = {"embeddings.word_embeddings." + k: v for k, v in _word_table(e5).items()}
    shapes = {"emb.pos": (h.positions, h.hidden), "emb.type": (h.token_types, h.hidden)}
    for src, dst in EMBEDDING_PARTS.items():
        out[dst] = _tensor(e5, src, shapes.get(src, (h.hidden,)))
    for layer in range(h.layers):
        for part, dst in LAYER_PARTS.items():
            out.update(_layer_part(e5, layer, part, dst))
    return out


def _layer_part(e5: E5File, layer: int, part: str, dst: str) -> dict[str, np.ndarray]:
    h, prefix = e5.header, f"encoder.layer.{layer}.{dst}"
    if part.endswith("ln"):
        return {
            f"{prefix}.weight": _tensor(e5, f"l{layer}.{part}.w", (h.hidden,)),
            f"{prefix}.bias": _tensor(e5, f"l{layer}.{part}.b", (h.hidden,)),
        }
    n_out = h.ffn if part == "fi" else h.hidden
    n_in = h.ffn if part == "fo" else h.hidden
    return {
        f"{prefix}.weight": _tensor(e5, f"l{layer}.{part}.w", (n_out, n_in)),
        f"{prefix}.bias": _tensor(e5, f"l{layer}.{part}.b", (n_out,)),
    }


def _word_table(e5: E5File) -> dict[str, np.ndarray]:
    h = e5.header
    blocks = e5.array("emb.word").reshape(h.vocab_rows, h.hidden // h.block)
    return {
        "qs": np.ascontiguousarray(blocks["qs"].reshape(h.vocab_rows, -1)),
        "scale": np.ascontiguousarray(blocks["d"]),
    }
