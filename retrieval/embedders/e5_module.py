"""The e5 encoder as a sentence-transformers input module, with a 4-bit token table.

The 250,037 x 384 token-embedding table stays in its 4-bit blocks (about 54 MB
instead of 384 MB in float32); only the rows a batch looks up are expanded. The
twelve BERT layers run in float32 through transformers' BertModel. Imports torch:
load this module only when the model is used. Tokenization: retrieval.embedders.e5_unigram.
"""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.input_module import InputModule
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
from torch import nn
from transformers import BertConfig, BertModel

from retrieval.embedders.e5_unigram import CompactUnigram

WORD_PREFIX = "embeddings.word_embeddings."
BLOCK = 32


class Q4Embedding(nn.Module):
    """Embedding lookup over Q4 rows: per 32 weights one fp16 scale and 16 bytes of nibbles."""

    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.dim, self.blocks = dim, dim // BLOCK
        self.register_buffer("qs", torch.zeros(rows, self.blocks * 16, dtype=torch.uint8))
        self.register_buffer("scale", torch.zeros(rows, self.blocks, dtype=torch.float16))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        packed = self.qs[ids].view(*ids.shape, self.blocks, 16)
        nibbles = torch.cat([packed & 0x0F, packed >> 4], dim=-1).to(torch.float32) - 8.0
        weights = nibbles * self.scale[ids].to(torch.float32).unsqueeze(-1)
        return weights.reshape(*ids.shape, self.dim)


class E5Encoder(InputModule):
    """Tokenizer + BERT encoder producing token embeddings for Pooling."""

    config_keys: list[str] = []

    def __init__(self, bert: BertModel, tokenizer: CompactUnigram) -> None:
        super().__init__()
        self.bert = bert
        self.unigram = tokenizer
        self.max_seq_length = bert.config.max_position_embeddings

    def preprocess(self, inputs: list[str], prompt: str | None = None, **kwargs) -> dict:
        texts = self._prepend_prompt(list(inputs), prompt) if prompt else list(inputs)
        ids, mask = self.unigram.encode(texts)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        out = self.bert(input_ids=features["input_ids"], attention_mask=features["attention_mask"])
        features["token_embeddings"] = out.last_hidden_state
        return features

    def get_embedding_dimension(self) -> int:
        return self.bert.config.hidden_size

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        raise NotImplementedError("the e5 folder is written by retrieval.embedders.e5_convert")

    @classmethod
    def from_folder(cls, folder: Path) -> "E5Encoder":
        config = BertConfig.from_dict(json.loads((folder / "config.json").read_text()))
        rows, pad = config.vocab_size, config.pad_token_id
        # the real table is the Q4 one below: never allocate it in float32
        config.vocab_size, config.pad_token_id = 1, None
        bert = BertModel(config, add_pooling_layer=False)
        bert.embeddings.word_embeddings = Q4Embedding(rows, config.hidden_size)
        bert.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True, assign=True)
        bert.config.vocab_size, bert.config.pad_token_id = rows, pad
        bert.eval()
        return cls(bert, CompactUnigram.from_file(folder / "tokenizer.json"))


def load_sentence_transformer(folder: Path) -> SentenceTransformer:
    """Encoder, mean pooling over the attention mask, L2 normalization (as e5 does)."""
    encoder = E5Encoder.from_folder(folder)
    pooling = Pooling(encoder.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[encoder, pooling, Normalize()], device="cpu")
