"""NIfTI-gz without recompressing what does not change (pure; bounded memory).

De-identification changes at most the NIfTI header and extensions (the bytes before
``vox_offset``) and the gzip member header (original file name, comment, extra field, time);
the voxel data never changes. So the decision is made from the decompressed prefix alone:

* ``identical``: the member header is already minimal (no FNAME/FCOMMENT/FEXTRA/FHCRC, MTIME 0),
  the file is one member and the prefix needs no change. The output is the input, byte for
  byte (the object store may copy it server-side: :func:`probe_nifti_gz` tells so up front).
* ``copied``: the prefix needs no change but a member header does. Each member header is
  rewritten to a minimal one (no FNAME/FCOMMENT/FEXTRA, MTIME 0; XFL and OS kept) and the
  deflate stream and its CRC-32/ISIZE trailer are copied through as they are, streaming.
* ``recompressed``: the prefix changes. The rewritten prefix and the unchanged voxel data are
  deflated again with ISA-L (igzip, :data:`FAST_LEVEL`; see ``bench/deflate_levels.py``), which
  releases the GIL, into one member with a minimal header.

Every byte copied through is verified while it streams: each member is inflated on the fly and
its CRC-32 and ISIZE checked against its trailer before the trailer is written, so a corrupt or
truncated file raises :class:`~aind_assets.hbcd.formats.gz.GzipFormatError` before the output is
complete (the caller discards it: object-store writes are atomic).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from isal import isal_zlib

from aind_assets.hbcd.formats.base import FileHandler, FormatContext
from aind_assets.hbcd.formats.gz import GZIP_MAGIC, GzipFormatError
from aind_assets.hbcd.formats.nifti import (
    NIFTI1_SIZE,
    NIFTI2_SIZE,
    NIFTI_CLEAR_FIELDS,
    NiftiFormatError,
    declared_size,
    parse_header,
    rewrite_nifti,
)
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import deidentifier
from aind_assets.hbcd.streams import ReadableBinary, WritableBinary

__all__ = [
    "FAST_LEVEL",
    "IDENTICAL",
    "COPIED",
    "NIFTI_GZ",
    "RECOMPRESSED",
    "MAX_PREFIX",
    "GzipCheck",
    "NiftiGzProbe",
    "prefix_rewriter",
    "probe_deidentified",
    "probe_nifti_gz",
    "rewrite_nifti_gz",
    "trailer_proves_one_member",
    "verify_gzip",
]

#: ISA-L deflate level for recompression (0-3). On the benchmark's T1w and BOLD images
#: (``bench/deflate_levels.py``) level 3 was 1.4-1.6 % larger than zlib level 6 at 15-30x its
#: speed, as fast as levels 1-2 and smaller (level 0: 25 % larger).
FAST_LEVEL = 3
IDENTICAL, COPIED, RECOMPRESSED = "identical", "copied", "recompressed"
#: Largest NIfTI prefix (header + extensions) accepted, as in :mod:`.nifti`.
MAX_PREFIX = (256 << 20) + NIFTI2_SIZE + 4
CHUNK = 1 << 20
#: isal's stub declares its error as an instance; it is the exception class
_ISAL_ERROR = cast("type[Exception]", isal_zlib.error)
_FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 2, 4, 8, 16
_MAX_HEADER_STRING = 1 << 16

#: Rewrites a decompressed NIfTI prefix (header + extender + extensions, ``vox_offset`` bytes).
PrefixRewriter = Callable[[bytes], bytes]


@dataclass(frozen=True)
class _Member:
    header: bytes  # the member header as found
    flags: int
    mtime: int

    @property
    def minimal(self) -> bytes:
        """The same header without FNAME/FCOMMENT/FEXTRA/FHCRC and with MTIME 0."""
        return GZIP_MAGIC + b"\x08\x00\x00\x00\x00\x00" + self.header[8:10]

    @property
    def is_minimal(self) -> bool:
        return self.header == self.minimal


class _Reader:
    """Buffered reader over the compressed source."""

    def __init__(self, raw: ReadableBinary):
        self.raw = raw
        self.buf = b""
        self.padded = False  # NUL padding was found after the last member

    def read_some(self) -> bytes:
        if self.buf:
            out, self.buf = self.buf, b""
            return out
        return self.raw.read(CHUNK)

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.raw.read(max(CHUNK, n - len(self.buf)))
            if not data:
                break
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def unread(self, data: bytes) -> None:
        self.buf = data + self.buf

    def cstring(self) -> bytes:
        parts: list[bytes] = []
        while True:
            if not self.buf:
                self.buf = self.raw.read(CHUNK)
                if not self.buf:
                    raise GzipFormatError("truncated gzip header")
            i = self.buf.find(b"\0")
            if i >= 0:
                parts.append(self.buf[: i + 1])
                self.buf = self.buf[i + 1 :]
                return b"".join(parts)
            parts.append(self.buf)
            self.buf = b""
            if sum(len(p) for p in parts) > _MAX_HEADER_STRING:
                raise GzipFormatError("gzip header string too long")


def _member_header(r: _Reader, first: bool) -> _Member | None:
    """Parse the next member header; ``None`` at the end of the file (NUL padding allowed)."""
    head = r.read(10)
    if not head:
        if first:
            raise GzipFormatError("empty file is not gzip")
        return None
    if head[:2] != GZIP_MAGIC:
        if not first and not head.strip(b"\0"):
            while rest := r.read_some():
                if rest.strip(b"\0"):
                    raise GzipFormatError("trailing garbage")
            r.padded = True
            return None
        raise GzipFormatError("not a gzip file" if first else "trailing garbage")
    if len(head) < 10 or head[2] != 8:
        raise GzipFormatError("truncated gzip header or unknown compression method")
    flags = head[3]
    parts = [head]
    if flags & _FEXTRA:
        xlen = r.read(2)
        if len(xlen) < 2:
            raise GzipFormatError("truncated gzip header")
        extra = r.read(struct.unpack("<H", xlen)[0])
        if len(extra) < struct.unpack("<H", xlen)[0]:
            raise GzipFormatError("truncated gzip header")
        parts += [xlen, extra]
    if flags & _FNAME:
        parts.append(r.cstring())
    if flags & _FCOMMENT:
        parts.append(r.cstring())
    if flags & _FHCRC:
        hcrc = r.read(2)
        if len(hcrc) < 2:
            raise GzipFormatError("truncated gzip header")
        parts.append(hcrc)
    return _Member(b"".join(parts), flags, struct.unpack("<I", head[4:8])[0])


class _Inflater:
    """Inflates one member's deflate stream from the reader, keeping the compressed bytes it
    consumed available to the caller (``take_raw``) and verifying the trailer at the end."""

    def __init__(self, r: _Reader, keep_raw: bool = True):
        self.r = r
        self.keep_raw = keep_raw
        self.d = isal_zlib.decompressobj(-15)
        self.crc = 0
        self.size = 0
        self.raw: list[bytes] = []  # compressed bytes read but not yet taken
        self.trailer = b""

    @property
    def done(self) -> bool:
        return bool(self.trailer)

    def step(self) -> bytes:
        """Inflate some more; returns decompressed bytes (maybe empty). At the end of the deflate
        stream, reads and verifies the trailer (``done`` becomes true)."""
        d = self.d
        data = d.unconsumed_tail
        if not data:
            data = self.r.read_some()
            if not data:
                raise GzipFormatError("truncated gzip stream")
            if self.keep_raw:
                self.raw.append(data)
        try:
            out = d.decompress(data, CHUNK)
        except _ISAL_ERROR:
            raise GzipFormatError("invalid deflate data") from None
        if out:
            self.crc = isal_zlib.crc32(out, self.crc)
            self.size += len(out)
        if d.eof:
            tail = d.unused_data
            if tail:  # bytes past the deflate stream belong to the trailer and what follows
                if self.keep_raw:  # they are a suffix of the last chunk read
                    last = self.raw.pop()
                    self.raw.append(last[: len(last) - len(tail)])
                self.r.unread(tail)
            trailer = self.r.read(8)
            if len(trailer) < 8:
                raise GzipFormatError("truncated gzip trailer")
            want_crc, want_size = struct.unpack("<II", trailer)
            if want_crc != self.crc or want_size != (self.size & 0xFFFFFFFF):
                raise GzipFormatError("gzip CRC or length mismatch")
            self.trailer = trailer
        return out

    def take_raw(self) -> bytes:
        """Compressed bytes consumed so far and not taken yet. The last chunk read is held back
        until the stream's end is known (it may hold the trailer)."""
        if self.done:
            out, self.raw = b"".join(self.raw), []
            return out
        out = b"".join(self.raw[:-1])
        self.raw = self.raw[-1:]
        return out


def _prefix_length(plain: bytes | bytearray) -> int | None:
    """``vox_offset`` once enough of the header is known, else ``None``."""
    if len(plain) < 4:
        return None
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", bytes(plain[:4]))
        if size in (NIFTI1_SIZE, NIFTI2_SIZE):
            break
    else:
        raise NiftiFormatError("not a NIfTI-1/NIfTI-2 header (sizeof_hdr)")
    if len(plain) < size:
        return None
    vox = parse_header(bytes(plain[:size])).vox_offset
    if vox > MAX_PREFIX:
        raise NiftiFormatError("NIfTI extensions too large")
    return vox


@dataclass(frozen=True)
class NiftiGzProbe:
    """What :func:`rewrite_nifti_gz` would do, judged from the start of a file."""

    mode: str  # IDENTICAL, COPIED or RECOMPRESSED
    vox_offset: int
    #: the uncompressed size the NIfTI header declares (``None``: it cannot say)
    data_size: int | None = None
    #: the first member's header: its length as found, and its minimal form
    header_length: int = 0
    minimal_header: bytes = b""


def probe_nifti_gz(head: bytes, rewrite: PrefixRewriter) -> NiftiGzProbe | None:
    """Judge from the first bytes of a ``.nii.gz`` (``head``) what rewriting it would do;
    ``None`` when ``head`` is too short to tell (read more) or the file cannot be judged so
    (the full rewrite will say why). ``IDENTICAL`` is only a claim about the start of the file:
    the caller must still verify the whole file (:func:`verify_gzip`) before copying it."""
    r = _Reader(_Bytes(head))
    try:
        member = _member_header(r, first=True)
        assert member is not None
        inf = _Inflater(r)
        plain = bytearray()
        vox = None
        while vox is None or len(plain) < vox:
            if inf.done:
                return None  # the prefix spans members: not judged here
            plain += inf.step()
            vox = _prefix_length(plain) if vox is None else vox
    except (GzipFormatError, NiftiFormatError, _ISAL_ERROR):
        return None
    prefix = bytes(plain[:vox])
    size = declared_size(prefix)
    mode = IDENTICAL if member.is_minimal else COPIED
    if rewrite(prefix) != prefix:
        mode = RECOMPRESSED
    return NiftiGzProbe(mode, vox, size, len(member.header), member.minimal)


def trailer_proves_one_member(probe: NiftiGzProbe, trailer: bytes) -> bool:
    """Whether a file that starts as ``probe`` judged and ends with ``trailer`` (its last 8
    bytes) is one gzip member of exactly the image its header declares, without reading the
    rest: the trailer's ISIZE equals the declared size (below 4 GiB, ISIZE being the size modulo
    2**32). The first member holds the header, so in a file of several members the last one is
    smaller than the whole; a truncated file, or one with bytes after its last member, ends in
    something else. Not proven: the CRC-32 of the voxel data (only a full read checks it), and a
    file built so that a later member alone is exactly the declared size."""
    if probe.data_size is None or not 0 < probe.data_size < 1 << 32 or len(trailer) != 8:
        return False
    return struct.unpack("<I", trailer[4:])[0] == probe.data_size


class _Bytes:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int = -1, /) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        out = self.data[self.pos : end]
        self.pos += len(out)
        return out


@dataclass(frozen=True)
class GzipCheck:
    members: int
    padded: bool  # NUL padding after the last member
    minimal: bool  # every member header minimal (no FNAME/FCOMMENT/FEXTRA/FHCRC, MTIME 0)

    @property
    def single_minimal(self) -> bool:
        """One minimal member and nothing after it: :func:`rewrite_nifti_gz` would write the
        file unchanged when its NIfTI prefix needs no change."""
        return self.members == 1 and self.minimal and not self.padded


def verify_gzip(src: ReadableBinary) -> GzipCheck:
    """Inflate every member of a gzip stream, checking CRC-32 and ISIZE. Raises
    :class:`GzipFormatError` on a corrupt or truncated file."""
    r = _Reader(src)
    members = 0
    minimal = True
    while (member := _member_header(r, first=members == 0)) is not None:
        minimal = minimal and member.is_minimal
        inf = _Inflater(r, keep_raw=False)
        while not inf.done:
            inf.step()
        members += 1
    return GzipCheck(members, r.padded, minimal)


def rewrite_nifti_gz(
    src: ReadableBinary,
    dst: WritableBinary,
    rewrite: PrefixRewriter,
    *,
    level: int = FAST_LEVEL,
) -> str:
    """De-identify (or re-identify) a ``.nii.gz`` stream: ``rewrite`` maps the decompressed
    prefix (header + extensions, ``vox_offset`` bytes) to its new form. Returns the mode used
    (:data:`IDENTICAL`, :data:`COPIED` or :data:`RECOMPRESSED`); see the module docstring."""
    r = _Reader(src)
    member = _member_header(r, first=True)
    assert member is not None
    inf = _Inflater(r)
    plain = bytearray()
    vox: int | None = None
    while vox is None or len(plain) < vox:
        if inf.done:  # the prefix spans members: recompress
            inf.keep_raw = False
            return _recompress(r, inf, plain, rewrite, None, dst, level)
        plain += inf.step()
        vox = _prefix_length(plain) if vox is None else vox
    prefix = bytes(plain[:vox])
    new_prefix = rewrite(prefix)
    if new_prefix != prefix:
        inf.keep_raw = False
        inf.raw.clear()
        return _recompress(r, inf, plain, rewrite, new_prefix, dst, level)
    del plain
    identical = member.is_minimal
    dst.write(member.minimal)
    while True:
        dst.write(inf.take_raw())
        while not inf.done:
            inf.step()
            dst.write(inf.take_raw())
        dst.write(inf.trailer)
        nxt = _member_header(r, first=False)
        if nxt is None:
            break
        identical = False
        dst.write(nxt.minimal)
        inf = _Inflater(r)
    return IDENTICAL if identical and not r.padded else COPIED


def _recompress(
    r: _Reader,
    inf: _Inflater,
    plain: bytearray,
    rewrite: PrefixRewriter,
    new_prefix: bytes | None,
    dst: WritableBinary,
    level: int,
) -> str:
    """Everything decompressed (``plain`` so far, then the rest of every member) with the
    prefix rewritten (``new_prefix`` when already known), deflated into one member with a
    minimal header."""
    vox = _prefix_length(plain)
    while vox is None or len(plain) < vox:  # the prefix spans members
        if inf.done:
            if _member_header(r, first=False) is None:
                raise NiftiFormatError("truncated NIfTI file")
            inf = _Inflater(r, keep_raw=False)
        plain += inf.step()
        vox = _prefix_length(plain) if vox is None else vox
    if new_prefix is None:
        new_prefix = rewrite(bytes(plain[:vox]))
    comp = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
    crc = 0
    size = 0

    def put(data: bytes) -> None:
        nonlocal crc, size
        if data:
            crc = isal_zlib.crc32(data, crc)
            size += len(data)
            dst.write(comp.compress(data))

    dst.write(GZIP_MAGIC + b"\x08\x00\x00\x00\x00\x00\x00\xff")
    put(new_prefix)
    put(bytes(plain[vox:]))
    del plain[:]
    while True:
        while not inf.done:
            put(inf.step())
        if _member_header(r, first=False) is None:
            break
        inf = _Inflater(r, keep_raw=False)
    dst.write(comp.flush())
    dst.write(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return RECOMPRESSED


# --- handler -----------------------------------------------------------------------------


def prefix_rewriter(ctx: FormatContext, notes: list[str]) -> PrefixRewriter:
    """The NIfTI header/extension rules of :func:`~.nifti.run_nifti`, applied to a prefix."""

    def rewrite(prefix: bytes) -> bytes:
        out = io.BytesIO()
        rewrite_nifti(
            io.BytesIO(prefix),
            out,
            text=ctx.translator.text,
            clear_fields=NIFTI_CLEAR_FIELDS if ctx.deidentify else frozenset(),
            drop_binary_extensions=ctx.deidentify,
            notes=notes,
        )
        return out.getvalue()

    return rewrite


def probe_deidentified(head: bytes, idmap: IdentityMap) -> NiftiGzProbe | None:
    """:func:`probe_nifti_gz` with the de-identification rules."""
    ctx = FormatContext(deidentifier(idmap), True, idmap, [])
    return probe_nifti_gz(head, prefix_rewriter(ctx, []))


def run_nifti_gz(src: ReadableBinary, dst: WritableBinary, ctx: FormatContext) -> None:
    notes: list[str] = []
    mode = rewrite_nifti_gz(src, dst, prefix_rewriter(ctx, notes))
    ctx.notes.extend(dict.fromkeys(notes))  # the prefix is rewritten once or twice: note once
    ctx.outcomes.append(mode)


NIFTI_GZ = FileHandler("nifti.gz", run_nifti_gz)
