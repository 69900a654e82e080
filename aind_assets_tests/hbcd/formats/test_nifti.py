from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from aind_assets.hbcd.formats.base import DeidentificationError
from aind_assets.hbcd.formats.dispatch import deidentify_bytes, deidentify_nifti_stream
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.leaks.scan import scan_for_identifiers

RC1 = "NDARINVAAAA1111"


def _image(klass=nib.Nifti1Image, endianness=None, shape=(4, 5, 6), dtype=np.int16, ext=()):
    data = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
    hdr = (klass.header_class)(endianness=endianness) if endianness else None
    img = klass(data, np.diag([2.0, 2.0, 2.0, 1.0]), header=hdr)
    h = img.header
    h["descrip"] = b"UMN0012_123456 TE=2.2"
    h["aux_file"] = b"UMN0012"
    h["intent_name"] = b"123456"
    if klass is nib.Nifti1Image:
        h["db_name"] = b"UMN"
    for code, content in ext:
        h.extensions.append(nib.nifti1.Nifti1Extension(code, content))
    return img, data


def _gz(raw: bytes, name: str = "sub-123456_T1w.nii") -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=1234) as gz:
        gz.write(raw)
    return buf.getvalue()


def _load(data: bytes, gz: bool):
    raw = gzip.decompress(data) if gz else data
    return nib.Nifti1Image.from_bytes(raw) if raw[:4] != b"\x1c\x02\x00\x00" else None


def test_nii_gz_header_clean_data_unchanged_no_fname(idmap: IdentityMap):
    img, data = _image(ext=[("comment", b"candidate 123456 at UMN, kit 91234567")])
    src = _gz(img.to_bytes())
    assert src[3] & 0x08
    out = io.BytesIO()
    notes = deidentify_nifti_stream(io.BytesIO(src), out, idmap, gz=True)
    result = out.getvalue()
    assert result[:2] == b"\x1f\x8b"
    assert not result[3] & 0x08  # no FNAME
    assert result[4:8] == b"\0\0\0\0"  # mtime 0
    loaded = nib.Nifti1Image.from_bytes(gzip.decompress(result))
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), data)
    np.testing.assert_array_equal(loaded.affine, img.affine)
    h = loaded.header
    assert h["descrip"].item() == f"{RC1} TE=2.2".encode()
    assert h["intent_name"].item() == RC1.encode()
    assert h["aux_file"].item() == b""
    assert h["db_name"].item() == b""
    [ext] = h.extensions
    assert ext.get_code() == 6
    assert (
        ext.get_content().rstrip(b"\0")
        == b"candidate " + RC1.encode() + b" at site01, kit 91234567"
    )
    assert notes == []
    assert scan_for_identifiers("x.nii.gz", result, idmap) == []


def test_plain_nii_via_dispatcher(idmap: IdentityMap):
    img, data = _image(shape=(3, 3, 3, 5), dtype=np.float32)
    new, out = deidentify_bytes(
        "sub-123456/ses-V02/func/sub-123456_bold.nii", img.to_bytes(), idmap
    )
    assert new == f"sub-{RC1}/ses-V02/func/sub-{RC1}_bold.nii"
    loaded = nib.Nifti1Image.from_bytes(out)
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), data)
    assert scan_for_identifiers(new, out, idmap) == []


def test_big_endian_nifti1(idmap: IdentityMap):
    img, data = _image(endianness=">")
    _, out = deidentify_bytes("a.nii", img.to_bytes(), idmap)
    loaded = nib.Nifti1Image.from_bytes(out)
    assert loaded.header.endianness == ">"
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), data)
    assert loaded.header["descrip"].item() == f"{RC1} TE=2.2".encode()


def test_nifti2_with_binary_extension_dropped(idmap: IdentityMap):
    dicom_like = b"\x10\x00\x10\x00PN\x08\x00UMN0012 \x10\x00\x20\x00LO\x06\x00123456"
    img, data = _image(nib.Nifti2Image, dtype=np.float32, ext=[("dicom", dicom_like)])
    src = img.to_bytes()
    assert scan_for_identifiers("a.nii", src, idmap)  # the source leaks in the extension
    out = io.BytesIO()
    notes = deidentify_nifti_stream(io.BytesIO(src), out, idmap, gz=False)
    assert notes == ["NIfTI: dropped 1 binary extension(s)"]
    loaded = nib.Nifti2Image.from_bytes(out.getvalue())
    assert struct.unpack("<q", out.getvalue()[168:176]) == (544,)  # vox_offset recomputed
    assert len(loaded.header.extensions) == 0
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), data)
    assert loaded.header["descrip"].item() == f"{RC1} TE=2.2".encode()
    assert scan_for_identifiers("a.nii", out.getvalue(), idmap) == []


def test_text_after_nul_in_field_is_wiped(idmap: IdentityMap):
    img, _ = _image()
    raw = bytearray(img.to_bytes())
    raw[148 : 148 + 80] = b"ok\0hidden 123456".ljust(80, b"\0")  # descrip
    _, out = deidentify_bytes("a.nii", bytes(raw), idmap)
    assert out[148 : 148 + 80] == b"ok".ljust(80, b"\0")


def test_descrip_too_long_after_replacement_is_cleared(idmap: IdentityMap):
    img, data = _image()
    img.header["descrip"] = b" ".join([b"123456"] * 11)  # 76 bytes -> 11 * 15 + 10 > 80
    _, out = deidentify_bytes("a.nii", img.to_bytes(), idmap)
    loaded = nib.Nifti1Image.from_bytes(out)
    assert loaded.header["descrip"].item() == b""
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), data)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 100, b"not a nifti at all" * 30, b"\x5c\x01\x00\x00" + b"\0" * 344],
)
def test_not_nifti_is_an_error(idmap: IdentityMap, data: bytes):
    with pytest.raises(
        DeidentificationError,
        match=r"^a\.nii: nifti: (not a (single-file )?NIfTI|truncated NIfTI|empty file \(0 bytes\))",
    ):
        deidentify_bytes("a.nii", data, idmap)


def test_demo_nifti_files(demo: tuple[Path, IdentityMap]):
    root, idmap = demo
    for path in sorted(root.rglob("*.nii.gz")):
        rel = path.relative_to(root).as_posix()
        new, out = deidentify_bytes(rel, path.read_bytes(), idmap)
        before = nib.load(path)
        after = nib.Nifti1Image.from_bytes(gzip.decompress(out))
        np.testing.assert_array_equal(np.asarray(after.dataobj), np.asarray(before.dataobj))
        assert after.shape == before.shape
        assert not out[3] & 0x08
        for field in ("aux_file", "db_name"):
            assert after.header[field].item() == b""
        assert scan_for_identifiers(new, out, idmap) == []


def test_streaming_uses_bounded_memory(tmp_path: Path, idmap: IdentityMap):
    shape = (128, 128, 64, 16)  # 32 MiB of int16 voxels
    data = (np.arange(np.prod(shape), dtype=np.int64) % 251).astype(np.int16).reshape(shape)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header["descrip"] = b"UMN0012_123456"
    src_path, dst_path = tmp_path / "in.nii.gz", tmp_path / "out.nii.gz"
    nib.save(img, src_path)
    del img
    tracemalloc.start()
    try:
        with open(src_path, "rb") as src, open(dst_path, "wb") as dst:
            deidentify_nifti_stream(src, dst, idmap, gz=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * 2**20, peak  # voxel data is 32 MiB; we hold a few 1 MiB chunks
    out = nib.load(dst_path)
    assert out.header["descrip"].item() == RC1.encode()
    np.testing.assert_array_equal(np.asarray(out.dataobj), data)
