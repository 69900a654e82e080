"""NIfTI-gz without recompressing what does not change: byte-identical files, copied-through
deflate streams, fast recompression, and every corrupt or truncated file failing clearly."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from aind_assets.hbcd.formats.base import DeidentificationError
from aind_assets.hbcd.formats.dispatch import deidentify_file
from aind_assets.hbcd.formats.gz import GzipFormatError
from aind_assets.hbcd.formats.nifti_gz import (
    COPIED,
    IDENTICAL,
    RECOMPRESSED,
    GzipCheck,
    probe_deidentified,
    probe_nifti_gz,
    verify_gzip,
)
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.leaks.scan import scan_for_identifiers

RC1 = "NDARINVAAAA1111"
REL = "sub-123456/ses-V02/anat/sub-123456_ses-V02_T1w.nii.gz"


def _image(dirty: bool, shape=(24, 20, 16, 3)) -> tuple[nib.Nifti1Image, np.ndarray]:
    rng = np.random.default_rng(0)
    data = (rng.normal(0, 30, shape) + 400).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    img.header["descrip"] = b"UMN0012_123456 TE=2.2" if dirty else b"TE=2.2;Time=101010.000"
    if dirty:
        img.header["aux_file"] = b"UMN0012"
    return img, data


def _nibabel_gz(img: nib.Nifti1Image, tmp_path: Path) -> bytes:
    """What nibabel itself writes (minimal gzip header)."""
    path = tmp_path / "img.nii.gz"
    nib.save(img, path)
    return path.read_bytes()


def _member(raw: bytes, *, name: bytes = b"", comment: bytes = b"", extra: bytes = b"") -> bytes:
    """One gzip member with the optional header fields a writer may set (mtime set too)."""
    flags = (4 if extra else 0) | (8 if name else 0) | (16 if comment else 0)
    head = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", 1700000000) + b"\x00\x03"
    if extra:
        head += struct.pack("<H", len(extra)) + extra
    if name:
        head += name + b"\0"
    if comment:
        head += comment + b"\0"
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(raw) + c.flush()
    return head + body + struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)


def _header_len(data: bytes) -> int:
    """Length of the first member header (parsed independently of the code under test)."""
    flags, pos = data[3], 10
    if flags & 4:
        pos += 2 + struct.unpack("<H", data[pos : pos + 2])[0]
    for bit in (8, 16):
        if flags & bit:
            pos = data.index(b"\0", pos) + 1
    return pos + (2 if flags & 2 else 0)


def _run(src: bytes, idmap: IdentityMap) -> tuple[bytes, list[str]]:
    out, outcomes = io.BytesIO(), []
    new = deidentify_file(REL, io.BytesIO(src), out, idmap, outcomes=outcomes)
    assert RC1 in new
    return out.getvalue(), outcomes


def _assert_valid_and_clean(out: bytes, data: np.ndarray, idmap: IdentityMap) -> nib.Nifti1Image:
    assert out[:4] == b"\x1f\x8b\x08\x00" and out[4:8] == b"\0\0\0\0"  # no FNAME..., mtime 0
    # a full read checks every member's CRC-32 and ISIZE
    plain = gzip.decompress(out)
    assert verify_gzip(io.BytesIO(out)).members >= 1
    loaded = nib.Nifti1Image.from_bytes(plain)
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), data)
    assert scan_for_identifiers("out.nii.gz", out, idmap) == []
    return loaded


def test_clean_nibabel_file_is_byte_identical(tmp_path: Path, idmap: IdentityMap):
    img, data = _image(dirty=False)
    src = _nibabel_gz(img, tmp_path)
    out, outcomes = _run(src, idmap)
    assert outcomes == [IDENTICAL]
    assert out == src
    assert verify_gzip(io.BytesIO(src)).single_minimal
    size = len(gzip.decompress(src))
    probe = probe_deidentified(src[:4096], idmap)
    assert probe is not None
    assert (probe.mode, probe.vox_offset, probe.data_size) == (IDENTICAL, 352, size)
    _assert_valid_and_clean(out, data, idmap)
    probe = probe_nifti_gz(src[:4096], lambda p: p)
    assert probe is not None and probe.mode == IDENTICAL and probe.vox_offset == 352


@pytest.mark.parametrize(
    "fields",
    [
        {"name": b"sub-123456_ses-V02_T1w.nii"},
        {"comment": b"scanned for UMN0012 at UMN"},
        {"extra": b"ID\x06\x00123456"},
        {"name": b"sub-123456_T1w.nii", "comment": b"UMN0012", "extra": b"XX\x02\x00ab"},
    ],
)
def test_clean_header_keeps_the_deflate_stream(idmap: IdentityMap, fields: dict[str, bytes]):
    img, data = _image(dirty=False)
    raw = img.to_bytes()
    src = _member(raw, **fields)
    assert scan_for_identifiers("x.nii.gz", src, idmap)  # the gzip header leaks
    out, outcomes = _run(src, idmap)
    assert outcomes == [COPIED]
    # only the member header changed: the deflate stream and its trailer are the source's
    assert out[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
    assert out[10:] == src[_header_len(src) :]
    loaded = _assert_valid_and_clean(out, data, idmap)
    assert loaded.header["descrip"].item() == b"TE=2.2;Time=101010.000"


def test_identifiers_in_the_header_recompress(tmp_path: Path, idmap: IdentityMap):
    img, data = _image(dirty=True)
    src = _nibabel_gz(img, tmp_path)
    out, outcomes = _run(src, idmap)
    assert outcomes == [RECOMPRESSED]
    loaded = _assert_valid_and_clean(out, data, idmap)
    assert loaded.header["descrip"].item() == f"{RC1} TE=2.2".encode()
    assert loaded.header["aux_file"].item() == b""
    assert len(out) < 1.2 * len(src)  # fast deflate, not stored blocks
    probe = probe_nifti_gz(src[:4096], lambda p: p + b"x")
    assert probe is not None and probe.mode == RECOMPRESSED
    size = len(gzip.decompress(src))
    probe = probe_deidentified(src[:4096], idmap)
    assert probe is not None
    assert (probe.mode, probe.vox_offset, probe.data_size) == (RECOMPRESSED, 352, size)
    assert probe_deidentified(src[:200], idmap) is None  # too short to tell


def test_text_extension_with_identifier_recompresses(idmap: IdentityMap):
    img, data = _image(dirty=False)
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"subject 123456"))
    out, outcomes = _run(_member(img.to_bytes()), idmap)
    assert outcomes == [RECOMPRESSED]
    loaded = _assert_valid_and_clean(out, data, idmap)
    assert loaded.header.extensions[0].get_content().rstrip(b"\0") == f"subject {RC1}".encode()


def test_multi_member_file_copies_every_member_with_minimal_headers(idmap: IdentityMap):
    img, data = _image(dirty=False)
    raw = img.to_bytes()
    cut1, cut2 = 2000, len(raw) // 2
    src = (
        _member(raw[:cut1], name=b"sub-123456_a.nii")
        + _member(raw[cut1:cut2], name=b"UMN0012", comment=b"123456")
        + _member(raw[cut2:], extra=b"ID\x02\x00UM")
        + b"\0" * 7  # NUL padding, as some writers leave
    )
    findings = scan_for_identifiers("x.nii.gz", src, idmap)
    assert {f.location for f in findings} >= {"gzip[0].FNAME", "gzip[1].FNAME", "gzip[1].FCOMMENT"}
    out, outcomes = _run(src, idmap)
    assert outcomes == [COPIED]
    assert verify_gzip(io.BytesIO(out)).members == 3
    assert verify_gzip(io.BytesIO(src)) == GzipCheck(3, True, False)
    assert gzip.decompress(out) == raw
    _assert_valid_and_clean(out, data, idmap)


@pytest.mark.parametrize("dirty", [False, True])
def test_header_split_across_members_recompresses(idmap: IdentityMap, dirty: bool):
    img, data = _image(dirty=dirty)
    raw = img.to_bytes()
    src = _member(raw[:100], name=b"sub-123456.nii") + _member(raw[100:])
    out, outcomes = _run(src, idmap)
    assert outcomes == [RECOMPRESSED]
    assert verify_gzip(io.BytesIO(out)) == GzipCheck(1, False, True)
    _assert_valid_and_clean(out, data, idmap)
    assert probe_nifti_gz(src, lambda p: p) is None  # not judged from the head


def _corruptions(src: bytes, body_at: int) -> dict[str, bytes]:
    mid = body_at + (len(src) - body_at) // 2
    flipped = bytearray(src)
    flipped[mid] ^= 0xFF
    bad_crc = bytearray(src)
    bad_crc[-8] ^= 0x01
    bad_size = bytearray(src)
    bad_size[-1] ^= 0x01
    return {
        "truncated in the deflate stream": src[:mid],
        "truncated in the trailer": src[:-3],
        "byte flipped in the deflate stream": bytes(flipped),
        "CRC mismatch": bytes(bad_crc),
        "ISIZE mismatch": bytes(bad_size),
        "trailing garbage": src + b"garbage!",
        "not gzip": b"\x1f\x8c" + src[2:],
        "empty": b"",
    }


@pytest.mark.parametrize("mode", [IDENTICAL, COPIED, RECOMPRESSED])
def test_corrupt_or_truncated_gzip_fails_the_file_clearly(
    tmp_path: Path, idmap: IdentityMap, mode: str
):
    img, _ = _image(dirty=mode == RECOMPRESSED)
    if mode == COPIED:
        src = _member(img.to_bytes(), name=b"sub-123456_T1w.nii")
    else:
        src = _nibabel_gz(img, tmp_path)
    assert _run(src, idmap)[1] == [mode]
    for what, bad in _corruptions(src, _header_len(src)).items():
        with pytest.raises(DeidentificationError) as e:
            _run(bad, idmap)
        message = str(e.value)
        assert message.startswith(f"sub-{RC1}/ses-V02/anat/sub-{RC1}_ses-V02_T1w.nii.gz: "), what
        assert "123456" not in message.replace(RC1, "") and "UMN" not in message, what
        if what != "empty":
            with pytest.raises(GzipFormatError):
                verify_gzip(io.BytesIO(bad))


def test_copy_through_memory_is_bounded(tmp_path: Path, idmap: IdentityMap):
    shape = (128, 128, 64, 16)  # 32 MiB of int16 voxels
    data = (np.arange(np.prod(shape), dtype=np.int64) % 251).astype(np.int16).reshape(shape)
    img = nib.Nifti1Image(data, np.eye(4))
    raw = img.to_bytes()
    src_path, dst_path = tmp_path / "in.nii.gz", tmp_path / "out.nii.gz"
    src_path.write_bytes(_member(raw, name=b"sub-123456_T1w.nii"))
    del img, raw
    for path_mode in (COPIED, RECOMPRESSED):
        if path_mode == RECOMPRESSED:
            dirty = nib.Nifti1Image(data, np.eye(4))
            dirty.header["descrip"] = b"UMN0012_123456"
            nib.save(dirty, src_path)
            del dirty
        outcomes: list[str] = []
        tracemalloc.start()
        try:
            with open(src_path, "rb") as src, open(dst_path, "wb") as dst:
                deidentify_file(REL, src, dst, idmap, outcomes=outcomes)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert outcomes == [path_mode]
        assert peak < 12 * 2**20, (path_mode, peak)
        np.testing.assert_array_equal(np.asarray(nib.load(dst_path).dataobj), data)
