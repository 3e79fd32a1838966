"""The e5 tokenizer: an XLM-RoBERTa-style SentencePiece unigram built from the model file.

Pieces and scores come from the file's vocabulary; the normalizer reproduces the
file's per-character map (NFKC plus SentencePiece's nmt rules: control characters
dropped, odd spaces made plain spaces); runs of spaces collapse; Metaspace puts
U+2581 before every word; the post-processor wraps a text as <s> ... </s>.
"""

import json
import unicodedata

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from retrieval.embedders.e5_file import Vocabulary

METASPACE = "\u2581"
MAX_TOKENS = 512
PLACEHOLDER_BASE = 0xF0000  # plane-15 private use: stand-ins for characters NFKC must not touch
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def build_tokenizer(vocab: Vocabulary) -> Tokenizer:
    """A `tokenizers` Tokenizer equivalent to upstream multilingual-e5-small's (about
    260 MB resident once loaded: its Unigram trie; bitrag runs retrieval.embedders.e5_unigram)."""
    return Tokenizer.from_str(tokenizer_json(vocab))


def tokenizer_json(vocab: Vocabulary) -> str:
    """tokenizer.json text, written without ever building the Unigram trie."""
    frame = Tokenizer(models.WordLevel({"<unk>": 0}, "<unk>"))
    frame.normalizer = _normalizer(vocab.char_map)
    frame.pre_tokenizer = pre_tokenizers.Metaspace(METASPACE, prepend_scheme="always")
    frame.decoder = decoders.Metaspace(METASPACE, prepend_scheme="always")
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    frame.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)],
    )
    frame.enable_truncation(MAX_TOKENS)
    frame.enable_padding(pad_id=vocab.pad, pad_token=vocab.pieces[vocab.pad])
    config = json.loads(frame.to_str())
    scores = vocab.scores.tolist()
    config["model"] = {
        "type": "Unigram",
        "unk_id": vocab.unk,
        "vocab": [[piece, score] for piece, score in zip(vocab.pieces, scores, strict=True)],
        "byte_fallback": False,
    }
    config["added_tokens"] = [
        _special(vocab.pieces.index(s), s) for s in SPECIALS if s in vocab.pieces
    ]
    return json.dumps(config, ensure_ascii=False)


def _special(token_id: int, content: str) -> dict:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def _nfkc(codepoint: int) -> tuple[int, ...]:
    return tuple(ord(c) for c in unicodedata.normalize("NFKC", chr(codepoint)))


def _char_class(codepoints: list[int]) -> Regex:
    return Regex("[" + "".join(f"\\x{{{cp:x}}}" for cp in sorted(codepoints)) + "]")


def _normalizer(char_map: dict[int, tuple[int, ...]]) -> normalizers.Normalizer:
    """Rules where the map departs from NFKC, then NFKC itself, then space collapsing."""
    by_output: dict[tuple[int, ...], list[int]] = {}
    for cp, out in char_map.items():
        if out != _nfkc(cp):
            by_output.setdefault(out, []).append(cp)
    steps = [
        normalizers.Replace(_char_class(cps), "".join(map(chr, out)))
        for out, cps in sorted(by_output.items())
    ]
    kept = _kept_by_map(char_map)
    protect = [normalizers.Replace(chr(cp), _placeholder(i)) for i, cp in enumerate(kept)]
    restore = [normalizers.Replace(_placeholder(i), chr(cp)) for i, cp in enumerate(kept)]
    collapse = normalizers.Replace(Regex(" {2,}"), " ")
    return normalizers.Sequence([*steps, *protect, normalizers.NFKC(), *restore, collapse])


def _placeholder(i: int) -> str:
    return chr(PLACEHOLDER_BASE + i)


def _kept_by_map(char_map: dict[int, tuple[int, ...]]) -> list[int]:
    """Basic-plane characters NFKC would change but the map leaves as they are (e.g. U+FF5E)."""
    kept = []
    for cp in range(0x80, 0x10000):
        if 0xD800 <= cp < 0xE000 or cp in char_map:
            continue
        if _nfkc(cp) != (cp,):
            kept.append(cp)
    return kept
