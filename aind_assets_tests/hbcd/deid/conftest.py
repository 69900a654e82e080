"""A session of three T1w ``.nii.gz`` images, one per NIfTI-gz path (a server-side copy, a
gzip header rewritten around the same deflate stream, a recompression), small and large, on the
identified side of the test store (both backends)."""

from __future__ import annotations

import functools
import gzip
import io
import struct
import zlib

import nibabel as nib
import numpy as np
import pytest

from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.resources.object_store import ObjectStoreResource

RC1 = "NDARINVAAAA1111"
KEY = f"sub-{RC1}_ses-V02"
#: how the session's four files are written: one per path
ONE_OF_EACH = {"copied": 1, "recompressed": 1, "rewritten": 1, "server-side copy": 1}

#: small files are de-identified in memory, large ones (> 8 MiB) streaming: both are tested
SHAPES = {"small": (40, 40, 30), "large": (256, 256, 100)}


def _volume(seed: int, shape=SHAPES["small"]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 300, shape) + 300).astype(np.int16)


def _nibabel_bytes(data: np.ndarray, descrip: bytes) -> bytes:
    img = nib.Nifti1Image(data, np.eye(4))
    img.header["descrip"] = descrip
    buf = io.BytesIO()
    # what nib.save writes for .nii.gz: one member, no name, mtime 0
    with gzip.GzipFile(fileobj=buf, mode="wb", filename="", mtime=0, compresslevel=1) as gz:
        gz.write(img.to_bytes())
    return buf.getvalue()


def _with_name(data: np.ndarray, name: str) -> bytes:
    buf = io.BytesIO()
    raw = nib.Nifti1Image(data, np.eye(4)).to_bytes()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=1700000000) as gz:
        gz.write(raw)
    return buf.getvalue()


@functools.cache
def _source_files(shape: str) -> dict[str, tuple[bytes, np.ndarray]]:
    """The session's three images of one size, made once per test session (the large ones take
    a second or so to write)."""
    base = "sub-123456/ses-V02/anat/sub-123456_ses-V02"
    v1, v2, v3 = (_volume(i, SHAPES[shape]) for i in (1, 2, 3))
    for v in (v1, v2, v3):
        v.setflags(write=False)  # shared by the tests: nobody may change them
    return {
        f"{base}_run-001_T1w.nii.gz": (_nibabel_bytes(v1, b"TE=2.2;Time=1.0"), v1),
        f"{base}_run-002_T1w.nii.gz": (_with_name(v2, "sub-123456_T1w.nii"), v2),
        f"{base}_run-003_T1w.nii.gz": (_nibabel_bytes(v3, b"UMN0012_123456"), v3),
    }


@pytest.fixture(params=list(SHAPES))
def session(store: ObjectStoreResource, idmap: IdentityMap, request: pytest.FixtureRequest):
    layout = HbcdLayout(store.url("pr"), store.url("deid"))
    base = "sub-123456/ses-V02/anat/sub-123456_ses-V02"
    files = dict(_source_files(request.param))
    for rel, (data, _) in files.items():
        assert (len(data) > 8 << 20) == (request.param == "large")
        store.put_bytes(f"{layout.identified_bids}/{rel}", data)
    store.put_bytes(f"{layout.identified_bids}/{base}_run-001_T1w.json", b'{"PatientID": "123456"}')
    return layout, files


def damaged(src: bytes, how: str) -> bytes:
    """A ``.nii.gz`` broken as real ones are: ``truncated`` (its last third cut off),
    ``flipped`` (a byte inverted mid-stream), ``crc`` (the trailer's CRC-32 off by one) or
    ``padded`` (NULs after the member)."""
    if how == "truncated":
        return src[: len(src) * 2 // 3]
    if how == "flipped":
        flipped = bytearray(src)
        flipped[len(src) // 2] ^= 0xFF
        return bytes(flipped)
    if how == "crc":
        crc = zlib.crc32(gzip.decompress(src)) ^ 1
        return src[:-8] + struct.pack("<I", crc) + src[-4:]
    if how == "padded":
        return src + b"\0" * 1024
    raise ValueError(f"unknown damage {how!r}")
