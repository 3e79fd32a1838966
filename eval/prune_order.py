"""Which layers `bitrag eval --prune N` (and `bitrag quantize --prune N`) removes: by default
those whose removal alone changes the model least, measured on the user's notes.

Rule `measured`: for every block but the last (it maps to the output), the source is
requantized to Q8_0 without that block alone, and its next-token distributions are compared
with those of the whole Q8_0 file (mean KL divergence over the second half of 128-token
windows). The text is eval/calibration.py's sample of the index minus the chunks the
divergence windows hold, so the order is not tuned on the text the rungs are then judged on;
as many tokens are scored as `--kld-tokens` asks for the rungs, at most RANK_TOKENS. Pruning
N layers removes the N with the smallest single-layer divergence (their effects are taken as
independent; every pruned rung's own divergence is then measured like any rung's). Measured
on the embedded SmolLM2-135M (30 blocks, 512 tokens of the sample notes): block 17 alone
costs 0.12 nats, block 28 (the one just before the last) 1.00, block 0 10.4.

Rule `before-last`: the N blocks just before the last (eval/quantize.py `prune_rule`), no
measurement.

The measured order is cached beside the rungs (`--out/models/.prune-order-<key>.json`),
keyed by the source's sha256, the sample and the token count.
"""

import os
from pathlib import Path

import numpy as np

from eval import eval_cache
from eval.calibration import describe, sample
from eval.divergence import log_softmax, position_logits
from eval.quantize import prune_rule, quantize_one
from retrieval.errors import UserError
from retrieval.threads import threads

RULES = ("measured", "before-last")
RANK_TOKENS = 512  # scored tokens per layer, at most
WINDOW = 128
RANK_CHARS = 8_000  # of sampled notes: enough text for RANK_TOKENS scored tokens


def before_last(layers: int) -> list[int]:
    """Every removable block, the one just before the last first (`prune_rule`'s order)."""
    return list(reversed(prune_rule(layers, layers - 2))) + [0]


def layers_for(order: list[int], count: int) -> tuple[int, ...]:
    """The `count` first layers of `order`, ascending (as llama.cpp takes them)."""
    return tuple(sorted(order[:count]))


def _windows(vocab, texts: list[str], tokens: int) -> list[list[int]]:
    stream: list[int] = []
    need = max(1, -(-tokens // (WINDOW // 2))) * WINDOW
    for text in texts:
        stream += vocab.tokenize(text.encode("utf-8"), add_bos=False)
        if len(stream) >= need:
            break
    windows = [stream[i : i + WINDOW] for i in range(0, len(stream) - WINDOW + 1, WINDOW)]
    if not windows:
        raise UserError("the notes outside the divergence sample are too short to rank layers")
    return windows[: need // WINDOW]


def _logprobs(path: Path, windows: list[list[int]], threads: int) -> np.ndarray:
    """Log-probabilities of the scored half of every window, (tokens, vocab) float32."""
    spans = [(window, WINDOW // 2, len(window)) for window in windows]
    return np.concatenate([log_softmax(s) for s in position_logits(path, spans, threads)])


def _kld(ref: np.ndarray, other: np.ndarray) -> float:
    p = np.exp(ref.astype(np.float64))
    return float((p * (ref.astype(np.float64) - other)).sum(axis=1).mean())


def measure(
    source: dict, layers: int, texts: list[str], tokens: int, models: Path, threads: int, say
) -> list:
    """[{"layer", "kld"}] for every block but the last, the source's Q8_0 without it alone."""
    from llama_cpp import Llama
    from llama_cpp._utils import suppress_stdout_stderr

    src = Path(source["path"])
    scratch = models / f".prune-rank-{os.getpid()}"
    scratch.mkdir(exist_ok=True)
    try:
        with suppress_stdout_stderr(disable=False):  # llama.cpp's load chatter
            whole = quantize_one(src, "Q8_0", scratch)
            vocab = Llama(model_path=str(whole), vocab_only=True, verbose=False)
            windows = _windows(vocab, texts, tokens)
            ref = _logprobs(whole, windows, threads)
        effects = []
        for i in range(layers - 1):
            say(f"ranking layers: [{i + 1}/{layers - 1}] {src.name} without block {i}")
            with suppress_stdout_stderr(disable=False):
                path = quantize_one(src, "Q8_0", scratch, None, (i,), f".without{i}")
                kld = _kld(ref, _logprobs(path, windows, threads))
            effects.append({"layer": i, "kld": round(kld, 6)})
            path.unlink()
        return effects
    finally:
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()


def order(
    rule: str,
    source: dict,
    layers: int,
    index,
    held_out: list[str],
    tokens: int,
    models: Path,
    threads: int,
    say,
) -> dict:
    """{"rule", "order" (every removable block, the first to remove first), "effects" (the
    measured rule's single-layer KLDs, else []), "sample"}; measured once per source, sample
    and token count."""
    if rule == "before-last":
        return {"rule": rule, "order": before_last(layers), "effects": [], "sample": None}
    chunks = sample(index.chunks, held_out=held_out, chars=RANK_CHARS)
    if not chunks:
        raise UserError(
            "--prune: the index holds no text outside the divergence sample to rank layers on"
        )
    tokens = min(tokens, RANK_TOKENS)
    description = describe(chunks)
    key = eval_cache.key(
        what="prune-order", source=source["sha256"], sample=description, tokens=tokens
    )
    cached = models / f".prune-order-{key}.json"
    found = eval_cache.read_json(cached)
    if found is None:
        texts = [c.text for c in chunks]
        effects = measure(source, layers, texts, tokens, models, threads, say)
        ranked = sorted(effects, key=lambda e: (e["kld"], e["layer"]))
        found = {"rule": rule, "order": [e["layer"] for e in ranked], "effects": effects}
        found |= {"sample": description, "tokens": tokens}
        eval_cache.write_json(cached, found)
    return found


def measured_layers(
    src: Path, layers: int, count: int, index, out_dir: Path, say
) -> tuple[int, ...]:
    """`bitrag quantize --prune COUNT`'s blocks by the measured rule: the `count` whose
    removal alone changes the model at `src` least on the sampled notes of `index` (no
    divergence windows to hold out here), measured once and cached in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    source = {"path": str(src), "sha256": eval_cache.sha256_file(src)}
    found = order("measured", source, layers, index, [], RANK_TOKENS, out_dir, threads(), say)
    return layers_for(found["order"], count)
