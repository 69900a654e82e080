"""``verify_unchanged=False`` (``HBCD_VERIFY_UNCHANGED_IMAGES=0``): an unchanged ``.nii.gz`` is
copied server-side after reading only its head and last 8 bytes; every other file takes the
same path as with verification, and a truncated file still fails clearly."""

from __future__ import annotations

import gzip
import io
from collections import Counter
from typing import Any

import pytest

from aind_assets.hbcd.deid.files import PROBE_BYTES
from aind_assets.hbcd.deid.scanning import scan_session
from aind_assets.hbcd.deid.store import deidentify_session
from aind_assets.hbcd.formats.gz import GzipFormatError
from aind_assets.hbcd.formats.nifti_gz import verify_gzip
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.storage import read_range
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets_tests.hbcd.deid.conftest import KEY, ONE_OF_EACH, RC1, damaged


def _bytes_read(store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Bytes this machine reads of each object on the S3 server: every read is a ``GetObject``
    that s3fs sends (whole, ranged, or a stream's blocks), counted from the server's answer."""
    fs = store.fs_for(store.root)
    counts: Counter[str] = Counter()
    call = fs._call_s3

    async def counting(method: str, *args: Any, **kwargs: Any) -> Any:
        resp = await call(method, *args, **kwargs)
        if method == "get_object":
            counts[kwargs["Key"].rsplit("/", 1)[-1]] += int(resp["ContentLength"])
        return resp

    monkeypatch.setattr(fs, "_call_s3", counting)
    return counts


def test_unchanged_image_is_copied_reading_only_its_head_and_trailer(
    store: ObjectStoreResource, idmap: IdentityMap, session, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, files = session
    on_s3 = store.root.startswith("s3://")  # (a local "server-side copy" is a file copy)
    read = _bytes_read(store, monkeypatch) if on_s3 else Counter()
    result = deidentify_session(store, layout, idmap, KEY, verify_unchanged=False)
    read = Counter(read)  # before this test reads the outputs
    assert result.ok, result.failed
    assert result.outcomes == ONE_OF_EACH
    for rel, (src, _) in files.items():
        out = store.get_bytes(f"{layout.deidentified_bids}/{rel.replace('123456', RC1)}")
        assert verify_gzip(io.BytesIO(out)).minimal  # every output is a valid gzip
        name = rel.rsplit("/", 1)[-1]
        if "run-001" in rel:
            assert out == src
        if not on_s3:
            continue
        if "run-001" in rel and len(src) > PROBE_BYTES:
            assert read[name] == PROBE_BYTES + 8 < len(src) // 30, read
        elif "run-002" in rel and len(src) > PROBE_BYTES:  # read once, and its trailer
            assert read[name] == len(src) + 8, read
        else:  # a header to rewrite, or a head that is the whole file: read once, in full
            assert read[name] == len(src), read
    assert scan_session(store, layout, idmap, KEY).clean


@pytest.mark.parametrize("damage", ["truncated", "padded"])
@pytest.mark.parametrize("run", ["001", "002"])  # gzip header minimal / naming the file
def test_what_the_trailer_cannot_prove_is_read_in_full(
    store: ObjectStoreResource, idmap: IdentityMap, session, damage: str, run: str
) -> None:
    layout, files = session
    rel = next(r for r in files if f"run-{run}" in r)
    src = files[rel][0]
    bad = damaged(src, damage)
    store.put_bytes(f"{layout.identified_bids}/{rel}", bad)
    result = deidentify_session(store, layout, idmap, KEY, verify_unchanged=False)
    new = rel.replace("123456", RC1)
    dst = f"{layout.deidentified_bids}/{new}"
    if damage == "truncated":
        assert list(result.failed) == [new]
        assert result.failed[new].startswith(f"{new}: nifti.gz: "), result.failed
        assert "truncated" in result.failed[new]
        assert not store.exists(dst)
    else:  # the padding goes: rewritten around the same deflate stream
        copied = 2 if run == "001" else 1  # (and run-001, unchanged, copied server-side)
        assert result.ok and result.outcomes["copied"] == copied, result.outcomes
        out = store.get_bytes(dst)
        assert verify_gzip(io.BytesIO(out)).single_minimal
        assert gzip.decompress(out) == gzip.decompress(src)


def test_a_corrupt_unchanged_image_is_copied_as_it_is(
    store: ObjectStoreResource, idmap: IdentityMap, session
) -> None:
    """What trusting gives up: a flipped CRC is not read, so the copy carries it, unchanged
    (every reader still finds it). Verification, the default, fails the file instead."""
    layout, files = session
    rel = next(r for r in files if "run-001" in r)
    src = files[rel][0]
    bad = damaged(src, "crc")
    store.put_bytes(f"{layout.identified_bids}/{rel}", bad)
    result = deidentify_session(store, layout, idmap, KEY, verify_unchanged=False)
    if len(src) <= PROBE_BYTES:  # its head is the whole file: verified at no extra cost
        assert list(result.failed) == [rel.replace("123456", RC1)]
        assert "CRC" in next(iter(result.failed.values()))
        return
    assert result.ok and result.outcomes["server-side copy"] == 1
    out = store.get_bytes(f"{layout.deidentified_bids}/{rel.replace('123456', RC1)}")
    assert out == bad
    with pytest.raises(GzipFormatError, match="CRC"):
        verify_gzip(io.BytesIO(out))
    verified = deidentify_session(store, layout, idmap, KEY)
    assert verified.ok  # already copied, from this very source version: nothing to redo


@pytest.mark.servers
def test_ranges_of_one_object_are_of_one_version(s3_store: ObjectStoreResource) -> None:
    """The trusted path reads an object in several ranges, each conditional on the listed ETag:
    an object rewritten in between is an error, never a mix of two versions."""
    url = s3_store.url("pr/a.nii.gz")
    s3_store.put_bytes(url, b"first version " * 100)
    listed = s3_store.info(url).etag
    assert read_range(s3_store, url, 0, 5, if_match=listed) == b"first"
    s3_store.put_bytes(url, b"second version " * 100)
    with pytest.raises(OSError, match="pre-conditions"):
        read_range(s3_store, url, 5, 10, if_match=listed)
    assert read_range(s3_store, url, 0, 6) == b"second"
