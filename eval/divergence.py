"""Divergence of a quantized rung from the ladder's top rung over held-out document tokens.

The statistics are those of llama.cpp's `llama-perplexity --kl-divergence`, computed over the
user's own indexed chunk text instead of generic text:

- tokens: a fixed, seeded sample of chunks (shuffled with SEED, concatenated with blank lines,
  tokenized by the source model), cut into windows of WINDOW tokens; the second half of each
  window is scored, so every scored token has at least WINDOW/2 tokens of context;
- per scored token: KL(P_top || P_rung) over the full next-token distribution, whether the top
  token is the same, the change in probability of the top rung's top token, the change in
  probability of the actual next token, and both models' negative log-likelihoods;
- summary: mean / median / 99.9th percentile KLD, same-top-token rate, RMS of both
  probability changes, and ln(PPL_rung / PPL_top) with its paired standard error (the
  per-token differences of NLL), as a ratio with a 95% interval.

Logits are streamed: the top rung's log-probabilities for the scored tokens live on disk in
a float32 memmap (`ReferenceWriter`), and each rung is compared window by window
(`Comparison`), so no more than one window of logits is ever in memory per model.
"""

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.runtime.native_log import captured_native_output

SEED = 0
WINDOW = 512  # tokens per evaluated window; the second half is scored
DEFAULT_TOKENS = 2048  # scored tokens (the reference file holds tokens x vocab float32)
Span = tuple[list[int], int, int]  # tokens to read, and the positions [start, end) kept


def position_logits(path: Path, spans: list[Span], threads: int) -> Iterator[np.ndarray]:
    """For each span, the model's logits at positions start..end-1 (each predicting the
    token after it), float32 (end - start, vocabulary); the model is opened once, with
    logits for every position, in a context as long as the longest span."""
    from llama_cpp import Llama

    longest = max(len(tokens) for tokens, _, _ in spans)
    with captured_native_output():
        llm = Llama(
            model_path=str(path),
            n_ctx=longest,
            n_batch=longest,
            logits_all=True,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
    try:
        for tokens, start, end in spans:
            llm.reset()
            llm.eval(tokens)
            yield np.asarray(llm.scores[start:end], dtype=np.float32)
    finally:
        llm.close()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities in float32 (the same arithmetic for every rung)."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def sample_windows(
    texts: list[str],
    tokenize,
    n_tokens: int = DEFAULT_TOKENS,
    window: int = WINDOW,
    seed: int = SEED,
) -> np.ndarray:
    """(n_windows, window) int32 token ids from a seeded shuffle of `texts`.

    `tokenize(text) -> list[int]`. With fewer tokens than asked for, fewer windows; with fewer
    than one window, one shorter window (at least 8 tokens), else a ValueError."""
    return sample_windows_used(texts, tokenize, n_tokens, window, seed)[0]


def sample_windows_used(
    texts: list[str],
    tokenize,
    n_tokens: int = DEFAULT_TOKENS,
    window: int = WINDOW,
    seed: int = SEED,
) -> tuple[np.ndarray, list[int]]:
    """`sample_windows` and the indices (into `texts`, in stream order) of the texts whose
    tokens the windows hold: the held-out text, which calibration must not see."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    per_window = window // 2
    n_windows = max(1, math.ceil(n_tokens / per_window))
    need = n_windows * window
    stream: list[int] = []
    starts: list[tuple[int, int]] = []  # (text index, offset of its first token in stream)
    for i in order:
        starts.append((i, len(stream)))
        stream += tokenize(texts[i] + "\n\n")
        if len(stream) >= need:
            break
    if len(stream) >= window:
        n_windows = min(n_windows, len(stream) // window)
        used = n_windows * window
        windows = np.asarray(stream[:used], dtype=np.int32).reshape(n_windows, window)
    elif len(stream) < 8:
        raise ValueError(f"the indexed text holds only {len(stream)} tokens, too few to score")
    else:
        used, windows = len(stream), np.asarray(stream, dtype=np.int32).reshape(1, -1)
    return windows, [i for i, start in starts if start < used]


def scored_rows(window: int) -> slice:
    """Logit rows whose next token is scored: row i predicts token i + 1."""
    return slice(window // 2 - 1, window - 1)


def n_scored(windows: np.ndarray) -> int:
    rows = scored_rows(windows.shape[1])
    return windows.shape[0] * (rows.stop - rows.start)


class ReferenceWriter:
    """The top rung's log-probabilities for every scored token, written to a float32 memmap."""

    def __init__(self, path: Path, windows: np.ndarray, vocab: int) -> None:
        self.path = path
        self.per_window = n_scored(windows[:1])
        self.array = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.float32, shape=(n_scored(windows), vocab)
        )

    def add(self, w: int, logprobs: np.ndarray) -> None:
        self.array[w * self.per_window : (w + 1) * self.per_window] = logprobs

    def close(self) -> None:
        self.array.flush()
        del self.array


@dataclass
class Comparison:
    """Per-token divergence of one rung against the stored reference, window by window."""

    reference: np.ndarray  # memmap (n_scored, vocab) float32 log-probs of the top rung
    windows: np.ndarray
    kld: list[np.ndarray] = field(default_factory=list)
    same_top: list[np.ndarray] = field(default_factory=list)
    dp_top: list[np.ndarray] = field(default_factory=list)
    dp_next: list[np.ndarray] = field(default_factory=list)
    nll_top: list[np.ndarray] = field(default_factory=list)
    nll_rung: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path, windows: np.ndarray) -> "Comparison":
        return cls(np.load(path, mmap_mode="r"), windows)

    def add(self, w: int, logprobs: np.ndarray) -> None:
        per = n_scored(self.windows[:1])
        ref = np.asarray(self.reference[w * per : (w + 1) * per], dtype=np.float32)
        if ref.shape != logprobs.shape:
            raise ValueError(f"reference rows {ref.shape} != rung rows {logprobs.shape}")
        rows = np.arange(per)
        nxt = self.windows[w, scored_rows(self.windows.shape[1]).start + 1 :]
        p = np.exp(ref)
        self.kld.append(np.sum(p * (ref - logprobs), axis=1, dtype=np.float64))
        top = ref.argmax(axis=1)
        self.same_top.append(top == logprobs.argmax(axis=1))
        self.dp_top.append(np.exp(logprobs[rows, top]) - p[rows, top])
        self.dp_next.append(np.exp(logprobs[rows, nxt]) - p[rows, nxt])
        self.nll_top.append(-ref[rows, nxt].astype(np.float64))
        self.nll_rung.append(-logprobs[rows, nxt].astype(np.float64))

    def per_token_kld(self) -> np.ndarray:
        """KL(P_top || P_rung) of every scored token, in window order (float64)."""
        return np.concatenate(self.kld)

    def summary(self) -> dict:
        return summarize(
            self.per_token_kld(),
            np.concatenate(self.same_top),
            np.concatenate(self.dp_top),
            np.concatenate(self.dp_next),
            np.concatenate(self.nll_top),
            np.concatenate(self.nll_rung),
        )


def _r(x: float, digits: int = 6) -> float:
    return float(round(float(x), digits))


def summarize(kld, same_top, dp_top, dp_next, nll_top, nll_rung) -> dict:
    """The llama-perplexity KLD statistics over all scored tokens."""
    n = len(kld)
    diff = nll_rung - nll_top
    ln_ratio = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return {
        "tokens": n,
        "kld_mean": _r(kld.mean(), 8),
        "kld_mean_se": _r(kld.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0, 8),
        "kld_median": _r(np.median(kld), 8),
        "kld_p99_9": _r(np.percentile(kld, 99.9), 8),
        "kld_max": _r(kld.max(), 8),
        "same_top_rate": _r(same_top.mean()),
        "rms_dp_top": _r(math.sqrt(float(np.mean(dp_top**2)))),
        "rms_dp_next": _r(math.sqrt(float(np.mean(dp_next**2)))),
        "ppl_top": _r(math.exp(nll_top.mean()), 4),
        "ppl_rung": _r(math.exp(nll_rung.mean()), 4),
        "ln_ppl_ratio": _r(ln_ratio, 8),
        "ln_ppl_ratio_se": _r(se, 8),
        "ppl_ratio": _r(math.exp(ln_ratio)),
        "ppl_ratio_ci95": [_r(math.exp(ln_ratio - 1.96 * se)), _r(math.exp(ln_ratio + 1.96 * se))],
    }
