"""Streaming NIfTI-1 / NIfTI-2 header and extension rewriting (pure; bounded memory).

A single-file NIfTI is: header (348 bytes NIfTI-1, 540 bytes NIfTI-2), a 4-byte extender, the
extensions (each ``esize`` int32, ``ecode`` int32, ``esize - 8`` bytes of content), padding, and
the voxel data from ``vox_offset``. We rewrite header string fields and extensions, recompute
``vox_offset``, and copy the voxel data chunk by chunk without decoding it.

Field offsets come from nibabel's header dtypes; the image itself is never loaded.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass

from nibabel.nifti1 import extension_codes
from nibabel.nifti1 import header_dtype as _nifti1_dtype
from nibabel.nifti2 import header_dtype as _nifti2_dtype

from aind_assets.hbcd.formats.base import FileHandler, FormatContext
from aind_assets.hbcd.formats.text import read_exact_or_less
from aind_assets.hbcd.streams import ReadableBinary, WritableBinary

__all__ = [
    "NIFTI_TEXT_EXTENSION_CODES",
    "NiftiFormatError",
    "NiftiInfo",
    "NiftiExtension",
    "declared_size",
    "read_nifti_prefix",
    "rewrite_nifti",
    "string_fields",
]

NIFTI1_SIZE, NIFTI2_SIZE = 348, 540
_MAGIC1_SINGLE, _MAGIC1_PAIR = b"n+1\0", b"ni1\0"
_MAGIC2_SINGLE = b"n+2\0\r\n\x1a\n"
_MAX_EXTENSIONS_BYTES = 256 << 20
CHUNK = 1 << 20

#: Extension codes whose content is text (rewritten token-wise); all others are binary
#: (dropped when de-identifying, e.g. 2 = embedded DICOM).
NIFTI_TEXT_EXTENSION_CODES = frozenset(
    {4, 6, 8, 30, 32, 42, 44}  # afni xml, comment, xcede, caret, cifti xml, quantiphyse, mrs json
)


class NiftiFormatError(ValueError):
    pass


@dataclass(frozen=True)
class NiftiInfo:
    version: int  # 1 or 2
    endian: str  # "<" or ">"
    size: int  # header size: 348 or 540
    vox_offset: int


@dataclass(frozen=True)
class NiftiExtension:
    index: int
    ecode: int
    offset: int  # byte offset of the extension (its esize field) in the file
    content: bytes

    @property
    def label(self) -> str:
        try:
            return str(extension_codes.label[self.ecode])
        except KeyError:
            return f"code{self.ecode}"

    def __repr__(self) -> str:
        return f"NiftiExtension(index={self.index}, ecode={self.ecode}, size={len(self.content)})"


def _dtype(version: int):
    return _nifti1_dtype if version == 1 else _nifti2_dtype


def string_fields(version: int) -> list[tuple[str, int, int]]:
    """``(name, offset, length)`` of the byte-string fields of the header (incl. ``magic``)."""
    out = []
    for name, spec in _dtype(version).fields.items():
        dt, off = spec[0], spec[1]
        if dt.kind == "S":
            out.append((name, off, dt.itemsize))
    return out


def _field(version: int, name: str) -> tuple[str, int]:
    dt, off = _dtype(version).fields[name][:2]
    code = {("f", 4): "f", ("f", 8): "d", ("i", 4): "i", ("i", 8): "q", ("i", 2): "h"}
    return code[(dt.kind, dt.itemsize)], off


def _bad_sizeof_hdr(head: bytes) -> str:
    (value,) = struct.unpack("<i", head[:4])
    return (
        f"not a NIfTI-1/NIfTI-2 header: sizeof_hdr is {value}, expected {NIFTI1_SIZE} "
        f"(NIfTI-1) or {NIFTI2_SIZE} (NIfTI-2) (a gzip file named .nii, or not an image?)"
    )


def parse_header(raw: bytes) -> NiftiInfo:
    if len(raw) < 4:
        raise NiftiFormatError("too short for a NIfTI header")
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", raw[:4])
        if sizeof_hdr in (NIFTI1_SIZE, NIFTI2_SIZE):
            break
    else:
        raise NiftiFormatError(_bad_sizeof_hdr(raw[:4]))
    version = 1 if sizeof_hdr == NIFTI1_SIZE else 2
    if len(raw) < sizeof_hdr:
        raise NiftiFormatError("truncated NIfTI header")
    if version == 1:
        magic = raw[344:348]
        if magic == _MAGIC1_PAIR:
            raise NiftiFormatError("NIfTI-1 pair header (.hdr/.img) is not supported")
        if magic != _MAGIC1_SINGLE:
            raise NiftiFormatError("not a single-file NIfTI-1 (magic)")
        code, off = _field(1, "vox_offset")
        (vox,) = struct.unpack(endian + code, raw[off : off + 4])
        if vox != int(vox):
            raise NiftiFormatError("non-integer vox_offset")
        vox_offset = int(vox)
    else:
        if raw[4:12] != _MAGIC2_SINGLE:
            raise NiftiFormatError("not a single-file NIfTI-2 (magic)")
        code, off = _field(2, "vox_offset")
        (vox_offset,) = struct.unpack(endian + code, raw[off : off + 8])
    if vox_offset < sizeof_hdr + 4:
        raise NiftiFormatError(
            f"vox_offset {vox_offset} points inside the header (the voxel data starts at "
            f"byte {sizeof_hdr + 4} or later)"
        )
    return NiftiInfo(version, endian, sizeof_hdr, vox_offset)


def declared_size(raw: bytes) -> int | None:
    """The bytes a single-file NIfTI declares: ``vox_offset`` plus the voxel data its ``dim`` and
    ``bitpix`` describe; ``None`` when the header cannot say (no dimensions, a dimension of 0 or
    less, voxels smaller than a byte)."""
    info = parse_header(raw)
    dim_dtype, dim_off = _dtype(info.version).fields["dim"][:2]
    item = dim_dtype.subdtype[0].itemsize
    dims = struct.unpack(
        info.endian + ("8h" if item == 2 else "8q"), raw[dim_off : dim_off + 8 * item]
    )
    code, off = _field(info.version, "bitpix")
    (bitpix,) = struct.unpack(info.endian + code, raw[off : off + struct.calcsize(code)])
    if not 1 <= dims[0] <= 7 or bitpix <= 0 or bitpix % 8:
        return None
    voxels = 1
    for d in dims[1 : dims[0] + 1]:
        if d <= 0:
            return None
        voxels *= d
    return info.vox_offset + voxels * (bitpix // 8)


def _read(src: ReadableBinary, n: int) -> bytes:
    data = read_exact_or_less(src, n)
    if len(data) != n:
        raise NiftiFormatError("truncated NIfTI file")
    return data


def read_nifti_prefix(src: ReadableBinary) -> tuple[NiftiInfo, bytes, list[NiftiExtension]]:
    """Read header and extensions; leaves ``src`` positioned at ``vox_offset``."""
    head = read_exact_or_less(src, 4)
    if not head:
        raise NiftiFormatError("empty file (0 bytes): not a NIfTI image")
    if len(head) < 4:
        raise NiftiFormatError(f"truncated NIfTI file: {len(head)} bytes, no header")
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", head)
        if size in (NIFTI1_SIZE, NIFTI2_SIZE):
            break
    else:
        raise NiftiFormatError(_bad_sizeof_hdr(head))
    raw = head + _read(src, size - 4)
    info = parse_header(raw)
    extender = _read(src, 4)
    pos = info.size + 4
    exts: list[NiftiExtension] = []
    if extender[0]:
        if info.vox_offset - pos > _MAX_EXTENSIONS_BYTES:
            raise NiftiFormatError("NIfTI extensions too large")
        while pos + 8 <= info.vox_offset:
            esize, ecode = struct.unpack(info.endian + "ii", _read(src, 8))
            if esize < 8 or pos + esize > info.vox_offset:
                raise NiftiFormatError("malformed NIfTI extension")
            exts.append(NiftiExtension(len(exts), ecode, pos, _read(src, esize - 8)))
            pos += esize
    _skip(src, info.vox_offset - pos)
    return info, raw, exts


def _skip(src: ReadableBinary, n: int) -> None:
    while n > 0:
        data = src.read(min(n, CHUNK))
        if not data:
            raise NiftiFormatError("truncated NIfTI file")
        n -= len(data)


def _pad16(block: bytes) -> bytes:
    return block + b"\0" * (-len(block) % 16)


def rewrite_nifti(
    src: ReadableBinary,
    dst: WritableBinary,
    *,
    text: Callable[[str], str],
    clear_fields: frozenset[str] = frozenset(),
    drop_binary_extensions: bool,
    notes: list[str] | None = None,
) -> NiftiInfo:
    """Copy a single-file NIfTI from ``src`` to ``dst`` (both uncompressed streams),
    rewriting header string fields through ``text`` (fields in ``clear_fields`` are zeroed;
    a rewritten value that does not fit its field is zeroed), rewriting text extensions, and
    dropping binary extensions if asked. Voxel data is streamed unchanged."""
    notes = notes if notes is not None else []
    info, raw, exts = read_nifti_prefix(src)
    hdr = bytearray(raw)
    for name, off, length in string_fields(info.version):
        if name in ("magic", "regular"):
            continue
        value = bytes(hdr[off : off + length])
        if not value.strip(b"\0") or name in clear_fields:
            new = b""
        else:
            # everything after the first NUL is dropped: nothing may hide behind it
            new = text(value.split(b"\0", 1)[0].decode("latin-1")).encode("latin-1", "replace")
            if len(new) > length:
                notes.append(f"NIfTI header {name} cleared (rewritten value does not fit)")
                new = b""
        hdr[off : off + length] = new.ljust(length, b"\0")

    blocks: list[bytes] = []
    dropped = 0
    for ext in exts:
        if ext.ecode in NIFTI_TEXT_EXTENSION_CODES:
            body = ext.content.rstrip(b"\0").decode("utf-8", "surrogateescape")
            content = text(body).encode("utf-8", "surrogateescape") + b"\0"
        elif drop_binary_extensions:
            dropped += 1
            continue
        else:
            content = ext.content
        block = _pad16(struct.pack(info.endian + "ii", 0, ext.ecode) + content)
        blocks.append(struct.pack(info.endian + "i", len(block)) + block[4:])
    if dropped:
        notes.append(f"NIfTI: dropped {dropped} binary extension(s)")
    vox_offset = info.size + 4 + sum(len(b) for b in blocks)
    code, off = _field(info.version, "vox_offset")
    struct.pack_into(info.endian + code, hdr, off, vox_offset)
    dst.write(bytes(hdr))
    dst.write(b"\x01\0\0\0" if blocks else b"\0\0\0\0")
    for b in blocks:
        dst.write(b)
    shutil.copyfileobj(src, dst, CHUNK)
    return NiftiInfo(info.version, info.endian, info.size, vox_offset)


#: NIfTI header string fields zeroed when de-identifying (``descrip`` and ``intent_name`` are
#: rewritten instead, because tools use them).
NIFTI_CLEAR_FIELDS = frozenset({"data_type", "db_name", "aux_file", "unused_str"})


# --- NIfTI -------------------------------------------------------------------------------


def run_nifti(src: ReadableBinary, dst: WritableBinary, ctx: FormatContext) -> None:
    rewrite_nifti(
        src,
        dst,
        text=ctx.translator.text,
        clear_fields=NIFTI_CLEAR_FIELDS if ctx.deidentify else frozenset(),
        drop_binary_extensions=ctx.deidentify,
        notes=ctx.notes,
    )


NIFTI = FileHandler("nifti", run_nifti)
