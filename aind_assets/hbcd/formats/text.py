"""Text encoding detection and lossless streaming decode/encode (pure).

Detection (from the first bytes): UTF-32 / UTF-16 / UTF-8 byte-order marks; UTF-16 without a BOM
when every other byte of the first bytes is NUL; otherwise UTF-8 with ``surrogateescape``, which
also round-trips latin-1 and any other bytes exactly (invalid bytes become lone surrogates, which
are token separators for identifier matching, like non-ASCII letters).
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from dataclasses import dataclass

from aind_assets.hbcd.formats.base import FileHandler, FormatContext
from aind_assets.hbcd.streams import ReadableBinary, WritableBinary
from aind_assets.textfiles import BOMS

__all__ = [
    "PrefixedReader",
    "TextEncoding",
    "decode_chunks",
    "detect_encoding",
    "open_text",
]

CHUNK = 1 << 20
_PEEK = 64


@dataclass(frozen=True)
class TextEncoding:
    codec: str  # codec for the body (without BOM)
    bom: bytes  # BOM to write back (b"" when there was none)
    errors: str

    @property
    def name(self) -> str:
        return self.codec + ("+bom" if self.bom else "")

    def decode(self, data: bytes) -> str:
        if self.bom and data.startswith(self.bom):
            data = data[len(self.bom) :]
        return data.decode(self.codec, self.errors)

    def encode(self, text: str) -> bytes:
        return self.bom + text.encode(self.codec, self.errors)


def detect_encoding(prefix: bytes) -> TextEncoding:
    """Detect the encoding from (at least the first 64) bytes of a file."""
    for bom, codec in BOMS:
        if prefix.startswith(bom):
            errors = "surrogateescape" if codec == "utf-8" else "surrogatepass"
            return TextEncoding(codec, bom, errors)
    sample = prefix[: _PEEK - (_PEEK % 2)]
    if len(sample) >= 4 and len(sample) % 2 == 0:
        even, odd = sample[0::2], sample[1::2]
        if not any(odd) and all(even):
            return TextEncoding("utf-16-le", b"", "surrogatepass")
        if not any(even) and all(odd):
            return TextEncoding("utf-16-be", b"", "surrogatepass")
    return TextEncoding("utf-8", b"", "surrogateescape")


class PrefixedReader(io.RawIOBase):
    """A readable stream: ``prefix`` bytes followed by the rest of ``raw``."""

    def __init__(self, prefix: bytes, raw: ReadableBinary):
        self._prefix = memoryview(prefix)
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        return n


def read_exact_or_less(stream: ReadableBinary, n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        data = stream.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def open_text(src: ReadableBinary) -> tuple[TextEncoding, ReadableBinary]:
    """Detect the encoding of ``src``; returns it and a stream positioned after the BOM."""
    prefix = read_exact_or_less(src, _PEEK)
    enc = detect_encoding(prefix)
    body = prefix[len(enc.bom) :]
    return enc, io.BufferedReader(PrefixedReader(body, src), CHUNK)


def decode_chunks(stream: ReadableBinary, enc: TextEncoding, chunk: int = CHUNK) -> Iterator[str]:
    """Incrementally decode ``stream`` (already past the BOM)."""
    dec = codecs.getincrementaldecoder(enc.codec)(enc.errors)
    while True:
        data = stream.read(chunk)
        if not data:
            break
        text = dec.decode(data)
        if text:
            yield text
    tail = dec.decode(b"", final=True)
    if tail:
        yield tail


TEXT_EXTENSIONS = frozenset(
    {".txt", ".html", ".htm", ".log", ".md", ".csv", ".toml", ".bvec", ".bval", ".svg", ".rst"}
)
#: Extension-less BIDS text files (lower-case).
TEXT_NAMES = frozenset({"readme", "changes", "license", ".bidsignore"})


# --- text --------------------------------------------------------------------------------


def _run_text(src: ReadableBinary, dst: WritableBinary, ctx: FormatContext) -> None:
    enc, body = open_text(src)
    dst.write(enc.bom)
    encoder = codecs.getincrementalencoder(enc.codec)(enc.errors)
    for piece in ctx.translator.iter_text(decode_chunks(body, enc)):
        dst.write(encoder.encode(piece))
    dst.write(encoder.encode("", final=True))


TEXT = FileHandler("text", _run_text)
