"""Token ids for `bitrag tune`: the pairs in the student's chat template, whether the teacher
shares the student's vocabulary, and the teacher's next-token logits over the student's ids.

The prompt is rendered exactly as llama-cpp-python's `create_chat_completion` renders it
when the agent runs the student: the Jinja chat template in the GGUF's metadata
(tokenizer.chat_template), with the generation prompt appended, tokenized by llama.cpp
with special tokens parsed and no extra BOS. The answer is the teacher's text tokenized on
its own, then the end-of-generation token, so the student also learns to stop. Only
llama.cpp's vocabulary is loaded (vocab_only), which takes well under a second.

Vocabularies are shared when the size, the BOS/EOS ids and the ids of a probe text agree
(Qwen2.5 0.5B and 1.5B do; SmolLM2 and Qwen do not). Then the teacher reads the student's
exact ids (llama.cpp, logits_all) and its logits at the positions that predict the answer
tokens are kept in memory, float16: answer tokens x vocabulary per pair.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from agent.runtime.llm import Messages
from agent.runtime.native_log import captured_native_output
from eval.divergence import position_logits
from retrieval.errors import UserError
from retrieval.threads import threads

Example = tuple[list[int], list[int]]  # (prompt ids, answer ids)
PROBE = "Quantization keeps 4-bit weights; LoRA adds B·A. 양자화 [1] <notes>"


@contextmanager
def vocabulary(path: Path) -> Iterator:
    """A llama.cpp vocabulary-only model of `path` (its C log kept off the terminal)."""
    from llama_cpp import Llama

    try:
        with captured_native_output():
            vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    except ValueError:
        raise UserError(f"llama.cpp cannot read the vocabulary of {path}") from None
    try:
        yield vocab
    finally:
        vocab.close()


def chat_prompt(vocab, messages: Messages) -> str:
    """The messages in the model's own chat template, ready for the assistant's reply."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = vocab.metadata.get("tokenizer.chat_template")
    if not template:
        raise UserError("the student GGUF has no chat template (tokenizer.chat_template)")
    special = {
        name: vocab.detokenize([token], special=True).decode("utf-8", "replace")
        if token >= 0
        else ""
        for name, token in (("bos_token", vocab.token_bos()), ("eos_token", vocab.token_eos()))
    }
    return Jinja2ChatFormatter(template, **special)(messages=messages).prompt


def student_examples(student: Path, pairs: list[tuple[Messages, str]]) -> list[Example]:
    """(prompt ids, answer ids + EOS) per (messages, answer), in the student's vocabulary."""
    with vocabulary(student) as vocab:
        return [
            (
                vocab.tokenize(chat_prompt(vocab, messages).encode(), add_bos=False, special=True),
                vocab.tokenize(answer.encode(), add_bos=False, special=False) + [vocab.token_eos()],
            )
            for messages, answer in pairs
        ]


def _signature(path: Path) -> tuple:
    with vocabulary(path) as vocab:
        probe = vocab.tokenize(PROBE.encode(), add_bos=False, special=True)
        return vocab.n_vocab(), vocab.token_bos(), vocab.token_eos(), tuple(probe)


def shared_vocabulary(student: Path, teacher: Path) -> bool:
    return student.resolve() == teacher.resolve() or _signature(student) == _signature(teacher)


def teacher_logits(teacher: Path, examples: list[Example]) -> list[torch.Tensor]:
    """Per example, the teacher's logits at the positions predicting each answer token:
    float16, (answer tokens, vocabulary)."""
    spans = [(p + a, len(p) - 1, len(p) + len(a) - 1) for p, a in examples]
    scored = position_logits(teacher, spans, threads())
    return [torch.from_numpy(rows.astype(np.float16)) for rows in scored]


def batch_teacher_logits(
    rows: list[torch.Tensor], examples: list[Example], length: int
) -> torch.Tensor:
    """The teacher's rows placed at the shifted positions eval/lora.py scores (the row that
    predicts answer token j of example i sits at position len(prompt_i) - 1 + j); zeros
    elsewhere, which the loss never reads."""
    vocab = rows[0].shape[1]
    full = torch.zeros((len(examples), length - 1, vocab), dtype=torch.float32)
    for i, ((prompt, answer), row) in enumerate(zip(examples, rows, strict=True)):
        full[i, len(prompt) - 1 : len(prompt) - 1 + len(answer)] = row.float()
    return full
