"""What a ``.nii.gz``'s head and last 8 bytes prove without reading the rest (pure): the size a
NIfTI header declares, and one gzip member of exactly that size."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest

from aind_assets.hbcd.formats.nifti import declared_size
from aind_assets.hbcd.formats.nifti_gz import (
    IDENTICAL,
    NiftiGzProbe,
    probe_nifti_gz,
    trailer_proves_one_member,
)


@pytest.mark.parametrize("cls", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64, np.complex64])
@pytest.mark.parametrize("shape", [(7,), (5, 6, 7), (4, 5, 6, 3)])
def test_declared_size_is_the_size_nibabel_writes(cls, dtype, shape) -> None:
    raw = cls(np.zeros(shape, dtype), np.eye(4)).to_bytes()
    assert declared_size(raw) == len(raw)


def test_big_endian_and_extensions_count() -> None:
    header = nib.Nifti1Header(endianness=">")
    img = nib.Nifti1Image(np.zeros((3, 4, 5), ">i2"), np.eye(4), header=header)
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"hello world"))
    raw = img.to_bytes()
    assert raw[:4] == (348).to_bytes(4, "big")
    assert declared_size(raw) == len(raw)


def test_a_header_that_cannot_say_declares_nothing() -> None:
    raw = bytearray(nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), np.eye(4)).to_bytes())
    raw[42:44] = (0).to_bytes(2, "little")  # dim[1] = 0
    assert declared_size(bytes(raw)) is None
    raw = bytearray(nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), np.eye(4)).to_bytes())
    raw[40:42] = (9).to_bytes(2, "little")  # dim[0] = 9: not a NIfTI dimension count
    assert declared_size(bytes(raw)) is None


def _image(shape=(20, 20, 10)) -> bytes:
    data = np.random.default_rng(0).integers(0, 500, shape).astype(np.int16)
    return nib.Nifti1Image(data, np.eye(4)).to_bytes()


def _probe(gz: bytes) -> NiftiGzProbe:
    probe = probe_nifti_gz(gz[:4096], lambda prefix: prefix)
    assert probe is not None
    return probe


def test_one_member_of_the_declared_size_is_proven() -> None:
    gz = gzip.compress(_image(), mtime=0)
    probe = _probe(gz)
    assert probe.mode == IDENTICAL and probe.data_size == len(_image())
    assert trailer_proves_one_member(probe, gz[-8:])


@pytest.mark.parametrize(
    "damage",
    ["truncated by 1", "truncated by half", "NUL padding", "bytes appended", "two members"],
)
def test_what_the_trailer_does_not_prove(damage: str) -> None:
    raw = _image()
    gz = gzip.compress(raw, mtime=0)
    bad = {
        "truncated by 1": gz[:-1],
        "truncated by half": gz[: len(gz) // 2],
        "NUL padding": gz + b"\0" * 512,
        "bytes appended": gz + b"junk after the member",
        "two members": gzip.compress(raw[:4000], mtime=0) + gzip.compress(raw[4000:], mtime=0),
    }[damage]
    assert not trailer_proves_one_member(_probe(bad), bad[-8:])


def test_sizes_from_4_gib_are_never_proven_by_a_32_bit_isize() -> None:
    gz = gzip.compress(_image(), mtime=0)
    probe = _probe(gz)
    big = NiftiGzProbe(probe.mode, probe.vox_offset, probe.data_size + (1 << 32))
    assert not trailer_proves_one_member(big, gz[-8:])
    assert not trailer_proves_one_member(NiftiGzProbe(probe.mode, probe.vox_offset), gz[-8:])


def test_the_probe_gives_the_minimal_header_to_put_before_the_deflate_stream() -> None:
    raw = _image()
    named = gzip.compress(raw, mtime=1700000000)  # no name, but a time: not minimal
    buf = io.BytesIO()
    with gzip.GzipFile(filename="sub-123456_T1w.nii", mode="wb", fileobj=buf, mtime=17) as gz:
        gz.write(raw)
    for src in (named, buf.getvalue()):
        probe = _probe(src)
        assert probe.mode != IDENTICAL and trailer_proves_one_member(probe, src[-8:])
        out = probe.minimal_header + src[probe.header_length :]
        assert gzip.decompress(out) == raw and b"sub-123456" not in out[:64]
        assert out[4:8] == b"\0\0\0\0" and out[3] == 0  # MTIME 0, no flags
