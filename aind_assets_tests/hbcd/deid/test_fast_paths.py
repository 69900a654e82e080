"""De-identification of NIfTI-gz sessions on both backends (real S3 server and a local folder):
what needs no change is copied server-side, gzip headers are rewritten around the source's
deflate stream, changed headers are recompressed; every output is valid, identifier-free and
recorded as having unchanged voxels; a corrupt or truncated gzip fails its file clearly."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest

from aind_assets.hbcd.copies import META_VOXELS, VOXELS_UNCHANGED
from aind_assets.hbcd.deid.scanning import scan_session
from aind_assets.hbcd.deid.store import deidentify_session
from aind_assets.hbcd.formats.nifti_gz import verify_gzip
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.leaks.scan import scan_for_identifiers
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets_tests.hbcd.deid.conftest import KEY, ONE_OF_EACH, RC1, damaged


def test_each_file_takes_the_fastest_correct_path(
    store: ObjectStoreResource, idmap: IdentityMap, session
) -> None:
    layout, files = session
    result = deidentify_session(store, layout, idmap, KEY)
    assert result.ok, result.failed
    assert result.outcomes == ONE_OF_EACH
    for rel, (src, data) in files.items():
        dst = f"{layout.deidentified_bids}/{rel.replace('123456', RC1)}"
        out = store.get_bytes(dst)
        assert verify_gzip(io.BytesIO(out)).minimal  # every member checked (CRC-32, ISIZE)
        loaded = nib.Nifti1Image.from_bytes(gzip.decompress(out))
        np.testing.assert_array_equal(np.asarray(loaded.dataobj), data)
        assert scan_for_identifiers(rel.replace("123456", RC1), out, idmap) == []
        assert store.info(dst).metadata.get(META_VOXELS) == VOXELS_UNCHANGED
        if "run-001" in rel:
            assert out == src  # byte for byte: the server-side copy
        if "run-002" in rel:
            assert out[10:] == src[10 + len("sub-123456_T1w.nii") + 1 :]  # deflate stream kept
    assert scan_session(store, layout, idmap, KEY).clean
    # a re-run changes nothing
    again = deidentify_session(store, layout, idmap, KEY)
    assert again.ok and again.written == [] and again.unchanged == 4


@pytest.mark.parametrize("damage", ["truncated", "flipped", "crc"])
@pytest.mark.parametrize("run", ["001", "002", "003"])
def test_corrupt_or_truncated_gzip_fails_that_file_clearly(
    store: ObjectStoreResource, idmap: IdentityMap, session, damage: str, run: str
) -> None:
    layout, files = session
    assert deidentify_session(store, layout, idmap, KEY).ok  # a good copy exists first
    rel = next(r for r in files if f"run-{run}" in r)
    src = files[rel][0]
    bad = damaged(src, damage)
    store.put_bytes(f"{layout.identified_bids}/{rel}", bad)
    result = deidentify_session(store, layout, idmap, KEY)
    new = rel.replace("123456", RC1)
    assert list(result.failed) == [new]
    reason = result.failed[new]
    assert reason.startswith(f"{new}: nifti.gz: "), reason
    assert "gzip" in reason or "deflate" in reason, reason
    assert "123456" not in reason.replace(RC1, "") and "UMN" not in reason
    # the stale copy is gone; the others are intact
    assert not store.exists(f"{layout.deidentified_bids}/{new}")
    assert not result.ok


@pytest.mark.parametrize("damage", ["truncated", "crc"])
def test_a_corrupt_file_copied_server_side_while_verified_leaves_no_copy(
    store: ObjectStoreResource, idmap: IdentityMap, session, damage: str
) -> None:
    """The server-side copy of an unchanged NIfTI-gz runs while this machine verifies it:
    a file that then fails verification (on its first run: no earlier copy) leaves no copy."""
    layout, files = session
    rel = next(r for r in files if "run-001" in r)
    src = files[rel][0]
    bad = damaged(src, damage)
    store.put_bytes(f"{layout.identified_bids}/{rel}", bad)
    result = deidentify_session(store, layout, idmap, KEY)
    new = rel.replace("123456", RC1)
    assert list(result.failed) == [new] and "gzip" in result.failed[new]
    assert not store.exists(f"{layout.deidentified_bids}/{new}")
    assert "server-side copy" not in result.outcomes and len(result.written) == 3


def test_multi_member_file_with_minimal_first_header_is_rewritten(
    store: ObjectStoreResource, idmap: IdentityMap, session
) -> None:
    layout, files = session
    rel = next(r for r in files if "run-001" in r)
    raw = gzip.decompress(files[rel][0])
    two = gzip.compress(raw[:5000], mtime=0) + gzip.compress(raw[5000:], mtime=0)
    two = two[:3] + b"\0" + two[4:]  # (already minimal: no flags)
    store.put_bytes(f"{layout.identified_bids}/{rel}", two)
    result = deidentify_session(store, layout, idmap, KEY)
    assert result.ok, result.failed
    assert result.outcomes["copied"] == 2 and "server-side copy" not in result.outcomes
    out = store.get_bytes(f"{layout.deidentified_bids}/{rel.replace('123456', RC1)}")
    assert verify_gzip(io.BytesIO(out)).members == 2 and gzip.decompress(out) == raw


def test_an_output_still_holding_an_identifier_is_never_written(
    store: ObjectStoreResource, idmap: IdentityMap, session
) -> None:
    layout, _ = session
    # a cell equal to a DCCID in a column the rules do not rewrite: the scanner flags it
    rel = "sub-123456/ses-V02/sub-123456_ses-V02_scans.tsv"
    store.put_bytes(f"{layout.identified_bids}/{rel}", b"filename\tkit\nanat/x.nii.gz\t234567\n")
    result = deidentify_session(store, layout, idmap, KEY)
    new = rel.replace("123456", RC1)
    assert list(result.failed) == [new]
    assert result.failed[new] == f"{new}: DCCID left in the output, not written"
    assert not store.exists(f"{layout.deidentified_bids}/{new}")
    assert len(result.written) == 4  # the other files are fine
