"""Sentence embeddings from bitrag's two BERT encoders in plain numpy: no torch.

A one-shot `bitrag ask` embeds a query for the dense half of hybrid search and, when the
question's terms are not covered, the question and up to 120 retrieved sentences with e5
(agent/semantic.py). Importing torch and sentence-transformers for that cost 6-8 s of a
cold start. This is the same float32 computation sentence-transformers runs for both model
folders: BERT with absolute positions 0..n-1 and segment 0, mean pooling over the
attention mask, L2 normalization. What differs per model is the loader:

- all-MiniLM-L6-v2: the `tokenizers` tokenizer, truncated to sentence_bert_config.json's
  max_seq_length, and float32 model.safetensors;
- multilingual-e5-small (the folder retrieval.embedders.e5_convert writes): the CompactUnigram
  tokenizer (retrieval.embedders.e5_unigram, 512 tokens) and float32 layers; the 4-bit token table
  stays packed and only the rows looked up are expanded, as retrieval.embedders.e5_module's
  Q4Embedding does.

Texts run in batches of similar length (sorted by token count, padded to the longest of
their batch, at most BATCH_TOKENS tokens); padding is masked out of attention and of the
mean, as transformers and sentence-transformers do. Callers add the model's prefix.

Measured on this 2-core machine (shared with other jobs), fresh process: a MiniLM query took
4.9-7.3 s through sentence-transformers and 0.12-0.32 s here, an e5 query 0.55-0.75 s (~0.5 s
of it CompactUnigram parsing tokenizer.json; its vocabulary cache now loads in 0.13 s);
agent/semantic.py's match over 25-71 real
sentences fell from 6.1-6.6 s to 1.3-1.7 s. The matrix products bound the rest (~90 GFLOP/s
on one core, float32; torch's bf16 on AMX was faster once loaded): on one thread, 25
sentences took 0.7 s, 71 took 1.5 s. Batches of 256-512 tokens beat one text at a time by
1.4-2x and 2048-token batches by 1.4x. Against sentence-transformers' float32 vectors for
300 note chunks (82 cut at MiniLM's 256 tokens), 167 retrieved sentences and 7 odd queries,
no component differed by more than 2.7e-7 (MiniLM) and 1.9e-7 (e5). BLAS threads follow
retrieval.threads: with both cores busy elsewhere, a MiniLM query took 430 ms on 2 threads
and 12 ms on 1.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from threadpoolctl import threadpool_limits

Weights = dict[str, np.ndarray]
Words = Callable[[np.ndarray], np.ndarray]  # token ids -> their rows of the token table
Tokenize = Callable[[str], list[int]]  # special tokens included, truncated
WORDS = "embeddings.word_embeddings"
BATCH_TOKENS = 512  # padded tokens per batch
ERFC = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)  # A&S 7.1.26
ERFC_P = 0.3275911


@dataclass(frozen=True)
class Bert:
    weights: Weights  # float32, named as in transformers' BertModel (no token table)
    words: Words
    tokenize: Tokenize
    layers: int
    heads: int
    eps: float

    @property
    def dim(self) -> int:
        return self.weights["embeddings.LayerNorm.weight"].shape[0]

    def embed(self, texts: list[str], threads: int) -> np.ndarray:
        """L2-normalized float32 embeddings, one row per text; numpy's BLAS runs on at most
        `threads` threads."""
        rows = [self.tokenize(text) for text in texts]
        out = np.zeros((len(texts), self.dim), np.float32)
        with threadpool_limits(threads, user_api="blas"):
            for batch in _batches(rows):
                out[batch] = _encode([rows[i] for i in batch], self)
        return out


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _bert(config: dict, weights: Weights, words: Words, tokenize: Tokenize) -> Bert:
    layers, heads = config["num_hidden_layers"], config["num_attention_heads"]
    return Bert(weights, words, tokenize, layers, heads, config["layer_norm_eps"])


@lru_cache(maxsize=1)
def load_minilm(path: Path) -> Bert:
    """all-MiniLM-L6-v2's tokenizer and float32 weights, once per process."""
    from tokenizers import Tokenizer

    config = _config(path)
    st_config = json.loads((path / "sentence_bert_config.json").read_text())
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()  # padding is done here, per batch
    # counts [CLS] and [SEP], as transformers does
    tokenizer.enable_truncation(min(st_config["max_seq_length"], config["max_position_embeddings"]))
    weights = {
        k: v.astype(np.float32, copy=False)
        for k, v in load_file(path / "model.safetensors").items()
    }
    table = weights.pop(f"{WORDS}.weight")
    return _bert(config, weights, table.__getitem__, lambda text: tokenizer.encode(text).ids)


@lru_cache(maxsize=1)
def load_e5(path: Path) -> Bert:
    """multilingual-e5-small's tokenizer and weights from a converted folder, once per process."""
    from retrieval.embedders.e5_unigram import CompactUnigram

    weights = load_file(path / "model.safetensors")  # float32 but for the Q4 token table
    words = partial(_q4_rows, weights.pop(f"{WORDS}.qs"), weights.pop(f"{WORDS}.scale"))
    tokenizer = CompactUnigram.from_file(path / "tokenizer.json")
    return _bert(_config(path), weights, words, tokenizer.encode_ids)


def _q4_rows(qs: np.ndarray, scale: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows `ids` of a Q4 table: per 32 weights one fp16 scale and 16 bytes of nibbles,
    weight = (nibble - 8) * scale, the low nibbles first, then the high ones."""
    packed = qs[ids].reshape(*ids.shape, scale.shape[1], 16)
    nibbles = np.concatenate([packed & 0x0F, packed >> 4], axis=-1).astype(np.float32) - 8
    return (nibbles * scale[ids].astype(np.float32)[..., None]).reshape(*ids.shape, -1)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact (erf) GELU x * Phi(x), not the tanh approximation. With q the normal tail
    beyond |x|, Phi(x) is 1 - q for x >= 0 and q below 0, so x * Phi(x) = max(x, 0) - |x| q;
    q = erfc(|x| / sqrt(2)) / 2 by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7,
    float32's own resolution). In place where it can: these (tokens, 1536) arrays are the
    costliest after the matrix products."""
    a = np.abs(x)
    t = a * np.float32(ERFC_P / np.sqrt(2))
    t += 1
    np.reciprocal(t, out=t)
    q = t * np.float32(ERFC[-1] / 2)  # Horner: t (a1 + t (a2 + ... + t a5)) / 2
    for c in reversed(ERFC[:-1]):
        q += np.float32(c / 2)
        q *= t
    np.square(x, out=t)
    t *= np.float32(-0.5)
    q *= np.exp(t, out=t)
    q *= a
    np.maximum(x, 0, out=a)
    a -= q
    return a


def _dense(x: np.ndarray, w: Weights, name: str) -> np.ndarray:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def _add_norm(
    x: np.ndarray, residual: np.ndarray, w: Weights, prefix: str, eps: float
) -> np.ndarray:
    """LayerNorm(x + residual), with the LayerNorm weights under `prefix`."""
    weight, bias = w[f"{prefix}.LayerNorm.weight"], w[f"{prefix}.LayerNorm.bias"]
    return _layer_norm(x + residual, weight, bias, eps)


def _attention(x: np.ndarray, w: Weights, prefix: str, heads: int, bias: np.ndarray) -> np.ndarray:
    """Multi-head self-attention; x is (texts * tokens, hidden), `bias` (texts, 1, 1, tokens)
    is -inf on padding, so no token attends to it."""
    texts, tokens = bias.shape[0], bias.shape[-1]
    hidden = x.shape[-1]
    size = hidden // heads

    def split(name: str) -> np.ndarray:  # (texts, heads, tokens, size)
        projected = _dense(x, w, f"{prefix}.{name}").reshape(texts, tokens, heads, size)
        return projected.transpose(0, 2, 1, 3)

    q, k, v = split("query"), split("key"), split("value")
    scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1 / np.sqrt(size)) + bias
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = scores / scores.sum(axis=-1, keepdims=True)
    return (probs @ v).transpose(0, 2, 1, 3).reshape(texts * tokens, hidden)


def _layer(x: np.ndarray, model: Bert, i: int, bias: np.ndarray) -> np.ndarray:
    """One BERT encoder layer: attention, then the feed-forward block, each add & norm."""
    w, p, eps = model.weights, f"encoder.layer.{i}", model.eps
    attended = _dense(
        _attention(x, w, f"{p}.attention.self", model.heads, bias), w, f"{p}.attention.output.dense"
    )
    x = _add_norm(attended, x, w, f"{p}.attention.output", eps)
    inner = _gelu(_dense(x, w, f"{p}.intermediate.dense"))
    return _add_norm(_dense(inner, w, f"{p}.output.dense"), x, w, f"{p}.output", eps)


def _encode(rows: list[list[int]], model: Bert) -> np.ndarray:
    """Normalized mean-pooled embeddings of token id rows, padded to the longest row."""
    width = max(map(len, rows))
    ids = np.zeros((len(rows), width), np.int64)  # padding ids are never attended to or pooled
    mask = np.zeros((len(rows), width), bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, True
    w = model.weights
    positions = w["embeddings.position_embeddings.weight"][:width]
    segment = w["embeddings.token_type_embeddings.weight"][0]  # one text: all segment 0
    x = _add_norm(model.words(ids) + positions, segment, w, "embeddings", model.eps)
    x = x.reshape(-1, model.dim)  # (texts * tokens, hidden) for the matrix products
    bias = np.where(mask, np.float32(0), np.float32(-np.inf))[:, None, None, :]
    for i in range(model.layers):
        x = _layer(x, model, i, bias)
    kept = mask[..., None].astype(np.float32)
    pooled = (x.reshape(len(rows), width, -1) * kept).sum(axis=1) / kept.sum(axis=1)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _batches(rows: list[list[int]]) -> list[list[int]]:
    """Indices of `rows` in batches of similar length, at most BATCH_TOKENS padded tokens
    each (a longer row goes alone)."""
    batches: list[list[int]] = []
    for i in sorted(range(len(rows)), key=lambda i: len(rows[i])):
        if batches and (len(batches[-1]) + 1) * len(rows[i]) <= BATCH_TOKENS:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches
