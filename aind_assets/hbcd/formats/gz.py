"""gzip helpers (pure): a writer that never records the original file name, and a streaming
reader that exposes every member's header (FNAME, FCOMMENT, FEXTRA), which ``gzip.GzipFile``
silently skips for second and later members.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aind_assets.hbcd.formats.base import FormatContext
from aind_assets.hbcd.streams import ReadableBinary, WritableBinary

__all__ = [
    "GZIP_MAGIC",
    "GzipContentStream",
    "GzipFormatError",
    "GzipMemberHeader",
    "gzip_fname_flag_set",
    "iter_gzip",
    "open_gzip_writer",
]

GZIP_MAGIC = b"\x1f\x8b"
FTEXT, FHCRC, FEXTRA, FNAME, FCOMMENT = 1, 2, 4, 8, 16
CHUNK = 1 << 20
_MAX_HEADER_STRING = 1 << 16


class GzipFormatError(ValueError):
    pass


def open_gzip_writer(dst: WritableBinary, compresslevel: int = 6) -> gzip.GzipFile:
    """gzip writer with no FNAME (empty name), mtime 0 (deterministic output). Closing it
    does not close ``dst``."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=dst, mtime=0, compresslevel=compresslevel)


def gzip_fname_flag_set(data: bytes) -> bool:
    """True when ``data`` starts a gzip member whose header has the FNAME flag (byte 3 & 0x08)."""
    return len(data) >= 4 and data[:2] == GZIP_MAGIC and bool(data[3] & FNAME)


@dataclass(frozen=True)
class GzipMemberHeader:
    index: int  # member number, 0-based
    offset: int  # byte offset of the member in the compressed stream
    flags: int
    mtime: int
    fname: bytes | None
    fcomment: bytes | None
    fextra: bytes | None

    def __repr__(self) -> str:  # names may contain identifiers
        return (
            f"GzipMemberHeader(index={self.index}, offset={self.offset}, flags={self.flags:#x}, "
            f"fname={'<set>' if self.fname is not None else None})"
        )


class _Buffered:
    def __init__(self, raw: ReadableBinary, chunk: int):
        self.raw = raw
        self.chunk = chunk
        self.buf = b""
        self.pos = 0  # offset of buf[0] in the raw stream

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            data = self.raw.read(max(self.chunk, n - len(self.buf)))
            if not data:
                return
            self.buf += data

    def read(self, n: int) -> bytes:
        self._fill(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        self.pos += len(out)
        return out

    def read_cstring(self) -> bytes:
        parts = []
        total = 0
        while True:
            self._fill(1)
            if not self.buf:
                raise GzipFormatError("truncated gzip header")
            i = self.buf.find(b"\0")
            if i >= 0:
                parts.append(self.buf[:i])
                self.buf = self.buf[i + 1 :]
                self.pos += i + 1
                return b"".join(parts)
            parts.append(self.buf)
            total += len(self.buf)
            self.pos += len(self.buf)
            self.buf = b""
            if total > _MAX_HEADER_STRING:
                raise GzipFormatError("gzip header string too long")

    def read_some(self) -> bytes:
        if self.buf:
            out, self.buf = self.buf, b""
        else:
            out = self.raw.read(self.chunk)
        self.pos += len(out)
        return out

    def unread(self, data: bytes) -> None:
        self.buf = data + self.buf
        self.pos -= len(data)

    def at_eof(self) -> bool:
        self._fill(1)
        return not self.buf


def iter_gzip(src: ReadableBinary, chunk: int = CHUNK) -> Iterator[GzipMemberHeader | bytes]:
    """Stream a (possibly multi-member) gzip file: yields each member's header, then its
    decompressed data in chunks of at most ``chunk`` bytes. CRC and size are verified.
    Trailing NUL padding is tolerated; other trailing data raises :class:`GzipFormatError`."""
    r = _Buffered(src, chunk)
    index = 0
    while True:
        if r.at_eof():
            if index == 0:
                raise GzipFormatError("empty file is not gzip")
            return
        offset = r.pos
        head = r.read(10)
        if head[:2] != GZIP_MAGIC:
            if index > 0 and not head.strip(b"\0"):
                while True:
                    rest = r.read_some()
                    if not rest:
                        return
                    if rest.strip(b"\0"):
                        break
            raise GzipFormatError("not a gzip file" if index == 0 else "trailing garbage")
        if len(head) < 10 or head[2] != 8:
            raise GzipFormatError("truncated gzip header or unknown compression method")
        flags = head[3]
        (mtime,) = struct.unpack("<I", head[4:8])
        fextra = fname = fcomment = None
        if flags & FEXTRA:
            xlen_b = r.read(2)
            if len(xlen_b) < 2:
                raise GzipFormatError("truncated gzip header")
            (xlen,) = struct.unpack("<H", xlen_b)
            fextra = r.read(xlen)
            if len(fextra) < xlen:
                raise GzipFormatError("truncated gzip header")
        if flags & FNAME:
            fname = r.read_cstring()
        if flags & FCOMMENT:
            fcomment = r.read_cstring()
        if flags & FHCRC and len(r.read(2)) < 2:
            raise GzipFormatError("truncated gzip header")
        yield GzipMemberHeader(index, offset, flags, mtime, fname, fcomment, fextra)
        d = zlib.decompressobj(-zlib.MAX_WBITS)
        crc = 0
        size = 0
        while not d.eof:
            data = d.unconsumed_tail or r.read_some()
            out = d.decompress(data, chunk)
            if out:
                crc = zlib.crc32(out, crc)
                size += len(out)
                yield out
            elif not data:
                raise GzipFormatError("truncated gzip stream")
        if d.unused_data:
            r.unread(d.unused_data)
        trailer = r.read(8)
        if len(trailer) < 8:
            raise GzipFormatError("truncated gzip trailer")
        want_crc, want_size = struct.unpack("<II", trailer)
        if want_crc != crc or want_size != (size & 0xFFFFFFFF):
            raise GzipFormatError("gzip CRC or length mismatch")
        index += 1


class GzipContentStream(io.RawIOBase):
    """Readable stream of the decompressed content of every member; ``on_header`` is called
    with each :class:`GzipMemberHeader` as it is reached."""

    def __init__(self, src: ReadableBinary, on_header=None, chunk: int = CHUNK):
        self._it = iter_gzip(src, chunk)
        self._on_header = on_header
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            item = next(self._it, None)
            if item is None:
                return 0
            if isinstance(item, GzipMemberHeader):
                if self._on_header is not None:
                    self._on_header(item)
                continue
            self._buf = memoryview(item)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def gzipped(
    inner: Callable[[ReadableBinary, WritableBinary, FormatContext], None],
) -> Callable[[ReadableBinary, WritableBinary, FormatContext], None]:
    """Wrap a handler of plain content into one of gzip files."""

    def run(src: ReadableBinary, dst: WritableBinary, ctx: FormatContext) -> None:
        # typeshed's _ReadableFileobj also demands seek(), which GzipFile calls only to rewind
        # (a backward seek on it); reading forward, as here, needs read() alone.
        plain = gzip.GzipFile(fileobj=src, mode="rb")  # type: ignore[call-overload]
        with plain, open_gzip_writer(dst) as out:
            inner(plain, out, ctx)

    return run
