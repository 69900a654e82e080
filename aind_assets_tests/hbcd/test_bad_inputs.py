"""Bad HBCD inputs: each fails with a message naming the file and what is wrong, never an
identifier; nothing half-written is kept; the other files and sessions are unaffected."""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from aind_assets.hbcd.deid.store import deidentify_session
from aind_assets.hbcd.formats.base import DeidentificationError
from aind_assets.hbcd.formats.dispatch import deidentify_bytes, deidentify_tree
from aind_assets.hbcd.identity.idmap import IdentityMap, parse_identity_map
from aind_assets.hbcd.identity.replace import session_partition_key
from aind_assets.hbcd.identity.scrub import HbcdError
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.resources import IdentityMapResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.textfiles import TextInputError, decode_text
from aind_assets_tests.hbcd.conftest import MAP_CSV

RC1 = "NDARINVAAAA1111"
T1 = "sub-123456/ses-V02/anat/sub-123456_ses-V02_T1w"
T1_OUT = f"sub-{RC1}/ses-V02/anat/sub-{RC1}_ses-V02_T1w"


def _nifti() -> bytes:
    img = nib.Nifti1Image(np.zeros((2, 2, 2), dtype=np.int16), np.eye(4))
    return img.to_bytes()


def _deid(rel: str, data: bytes, idmap: IdentityMap) -> None:
    deidentify_bytes(rel, data, idmap)


# --- gzip / NIfTI -----------------------------------------------------------------------------


def test_truncated_nii_gz_says_truncated_and_names_the_file(idmap: IdentityMap) -> None:
    data = gzip.compress(_nifti())[:-20]
    with pytest.raises(DeidentificationError, match=rf"^{T1_OUT}\.nii\.gz: nifti\.gz: truncated"):
        _deid(f"{T1}.nii.gz", data, idmap)


def test_non_gzip_nii_gz_says_not_gzip(idmap: IdentityMap) -> None:
    with pytest.raises(
        DeidentificationError, match=rf"^{T1_OUT}\.nii\.gz: nifti\.gz: not a gzip file"
    ):
        _deid(f"{T1}.nii.gz", _nifti(), idmap)


def test_gzip_with_bad_crc_says_crc(idmap: IdentityMap) -> None:
    data = bytearray(gzip.compress(_nifti()))
    data[-8] ^= 0xFF  # the CRC32 of the trailer
    with pytest.raises(
        DeidentificationError, match=rf"^{T1_OUT}\.nii\.gz: nifti\.gz: gzip CRC or length mismatch"
    ):
        _deid(f"{T1}.nii.gz", bytes(data), idmap)


def test_gzip_with_trailing_garbage_is_refused(idmap: IdentityMap) -> None:
    data = gzip.compress(_nifti()) + b"garbage after the member"
    with pytest.raises(
        DeidentificationError, match=rf"^{T1_OUT}\.nii\.gz: nifti\.gz: trailing garbage"
    ):
        _deid(f"{T1}.nii.gz", data, idmap)


def test_gzip_with_corrupt_deflate_data(idmap: IdentityMap) -> None:
    good = gzip.compress(b"x" * 1000)
    data = good[:10] + b"\xff" * 8 + good[18:]
    with pytest.raises(DeidentificationError, match=r"events\.tsv\.gz: tsv\.gz: corrupt"):
        _deid("sub-123456/ses-V02/func/sub-123456_ses-V02_events.tsv.gz", data, idmap)


def test_zero_byte_nifti(idmap: IdentityMap) -> None:
    with pytest.raises(DeidentificationError, match=r"nii: nifti: empty file \(0 bytes\)"):
        _deid(f"{T1}.nii", b"", idmap)


def test_nifti_with_bad_sizeof_hdr_names_the_value(idmap: IdentityMap) -> None:
    data = struct.pack("<i", 123) + _nifti()[4:]
    with pytest.raises(DeidentificationError, match=r"sizeof_hdr is 123, expected 348"):
        _deid(f"{T1}.nii", data, idmap)


def test_nifti_with_vox_offset_inside_the_header(idmap: IdentityMap) -> None:
    data = bytearray(_nifti())
    struct.pack_into("<f", data, 108, 100.0)  # vox_offset
    with pytest.raises(DeidentificationError, match=r"vox_offset 100 points inside the header"):
        _deid(f"{T1}.nii", bytes(data), idmap)


def test_truncated_voxel_data(idmap: IdentityMap) -> None:
    data = bytearray(_nifti())
    struct.pack_into("<f", data, 108, 4096.0)  # voxel data would start past the end
    with pytest.raises(DeidentificationError, match=r"nii: nifti: truncated NIfTI file"):
        _deid(f"{T1}.nii", bytes(data), idmap)


# --- JSON sidecars and TSV ------------------------------------------------------------------


def test_invalid_json_gives_line_and_column(idmap: IdentityMap) -> None:
    data = b'{\n  "RepetitionTime": 2.0,\n  "EchoTime" 0.03\n}\n'
    with pytest.raises(
        DeidentificationError, match=r"T1w\.json: json: invalid JSON at line 3 column 14: Expecting"
    ):
        _deid(f"{T1}.json", data, idmap)


def test_json_with_duplicate_keys(idmap: IdentityMap) -> None:
    data = b'{"EchoTime": 0.03, "EchoTime": 0.04}'
    with pytest.raises(DeidentificationError, match=r"duplicate key 'EchoTime' in one object"):
        _deid(f"{T1}.json", data, idmap)


def test_json_duplicate_key_holding_an_identifier_is_shown_de_identified(
    idmap: IdentityMap,
) -> None:
    data = b'{"sub-123456": 1, "sub-123456": 2}'
    with pytest.raises(DeidentificationError, match=rf"duplicate key 'sub-{RC1}'") as e:
        _deid(f"{T1}.json", data, idmap)
    assert "123456" not in str(e.value).replace(RC1, "")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_with_nan_or_infinity(idmap: IdentityMap, constant: str) -> None:
    data = f'{{"EchoTime": {constant}}}'.encode()
    with pytest.raises(DeidentificationError, match=rf"{constant} is not a JSON number"):
        _deid(f"{T1}.json", data, idmap)


def test_empty_json_sidecar(idmap: IdentityMap) -> None:
    with pytest.raises(DeidentificationError, match=r"T1w\.json: json: empty JSON file"):
        _deid(f"{T1}.json", b"  \n", idmap)


def test_json_sidecar_not_utf8(idmap: IdentityMap) -> None:
    data = '{"Manufacturer": "Siemens Erlangen Médical"}'.encode("latin-1")
    with pytest.raises(DeidentificationError, match=r"not valid utf-8 text: .* offset 36"):
        _deid(f"{T1}.json", data, idmap)


def test_tsv_with_a_ragged_row_names_the_line(idmap: IdentityMap) -> None:
    data = b"participant_id\tage\nsub-123456\t12\nsub-234567\t13\textra\n"
    with pytest.raises(
        DeidentificationError, match=r"participants\.tsv: tsv: TSV line 3 has 3 cells .* 2 columns"
    ):
        _deid("participants.tsv", data, idmap)


# --- symbolic links in the identified tree ------------------------------------------------------


def _tree_with_escaping_link(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "assembly_bids"
    (src / "sub-123456" / "ses-V02" / "anat").mkdir(parents=True)
    (src / "sub-123456" / "ses-V02" / "anat" / "sub-123456_ses-V02_T1w.json").write_text(
        '{"EchoTime": 0.03}'
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"PatientName": "someone", "note": "not for release"}')
    os.symlink(
        outside / "secret.json", src / "sub-123456" / "ses-V02" / "sub-123456_ses-V02_leak.json"
    )
    return src, outside


def test_local_tree_refuses_a_link_pointing_outside(tmp_path: Path, idmap: IdentityMap) -> None:
    src, _ = _tree_with_escaping_link(tmp_path)
    dst = tmp_path / "deid"
    report = deidentify_tree(src, dst, idmap)
    skipped = {s.path: s.reason for s in report.skipped}
    leak = f"sub-{RC1}/ses-V02/sub-{RC1}_ses-V02_leak.json"
    assert skipped[leak].startswith("symbolic link pointing outside the listed tree: refused")
    assert not (dst / leak).exists()
    assert report.written == [f"sub-{RC1}/ses-V02/anat/sub-{RC1}_ses-V02_T1w.json"]


def test_store_session_run_refuses_the_link_and_never_copies_its_target(
    local_store: ObjectStoreResource, tmp_path: Path, idmap: IdentityMap
) -> None:
    layout = HbcdLayout(local_store.url("pr"), local_store.url("deid"))
    bids = Path(layout.identified_bids)
    bids.parent.mkdir(parents=True)
    src, _ = _tree_with_escaping_link(tmp_path)
    src.rename(bids)
    # a copy made while the path was a real file must not stay
    leak = f"sub-{RC1}/ses-V02/sub-{RC1}_ses-V02_leak.json"
    local_store.put_bytes(f"{layout.deidentified_bids}/{leak}", b"{}")
    listed = [i.url for i in local_store.list_objects(layout.identified_bids)]
    assert not any("leak" in u for u in listed)
    result = deidentify_session(local_store, layout, idmap, session_partition_key(RC1, "V02"))
    assert result.failed == {
        leak: "symbolic link pointing outside the listed tree: refused, its target is not read"
    }
    assert not result.ok
    assert not local_store.exists(f"{layout.deidentified_bids}/{leak}")
    assert result.written == [f"sub-{RC1}/ses-V02/anat/sub-{RC1}_ses-V02_T1w.json"]


def test_dangling_link_is_refused_without_naming_its_target(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path / "sub-123456_gone", root / "x.json")
    store = ObjectStoreResource(root=str(root))
    assert store.list_objects(str(root)) == []
    refused = store.refused_links(str(root))
    assert refused == {str(root / "x.json"): "symbolic link whose target does not exist: refused"}


# --- identity map and text inputs ---------------------------------------------------------------


def test_identity_map_in_utf16_with_bom_is_read(local_store: ObjectStoreResource) -> None:
    url = local_store.url("pr/identifiers/release_identifiers.csv")
    local_store.put_bytes(url, MAP_CSV.encode("utf-16"))
    assert len(IdentityMapResource(object_store=local_store, url=url).load()) == 3


def test_identity_map_not_utf8_names_file_and_offset(local_store: ObjectStoreResource) -> None:
    url = local_store.url("pr/identifiers/release_identifiers.csv")
    local_store.put_bytes(url, MAP_CSV.replace("UMN,", "UMN\xe9,", 1).encode("latin-1"))
    with pytest.raises(
        HbcdError,
        match=r"release_identifiers\.csv \(identity map\): not UTF-8 text: undecodable byte 0xe9 at offset 72",
    ):
        IdentityMapResource(object_store=local_store, url=url).load()


def test_utf16_without_bom_is_named() -> None:
    with pytest.raises(TextInputError, match=r"^ids\.csv: NUL character .* UTF-16 without"):
        decode_text("asset_id\n1\n".encode("utf-16-le"), "ids.csv")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DCCID,PSCID,site\n1,2,3\n", r"header is missing column\(s\) release_candidate_id"),
        (
            MAP_CSV + "999999,UMN0099,UMN,NDARINVAAAA1111,site01\n",
            r"duplicate release_candidate_id",
        ),
        (MAP_CSV.replace("UMN0012", "UMN-0012"), r"row 2: PSCID must contain only ASCII"),
        ("", r"empty identity map"),
    ],
)
def test_identity_map_errors_name_row_and_column(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^map\.csv: .*{message}"):
        parse_identity_map(text, "map.csv")


def test_other_files_are_unaffected_by_a_bad_one(tmp_path: Path, idmap: IdentityMap) -> None:
    src = tmp_path / "assembly_bids" / "sub-123456" / "ses-V02" / "anat"
    src.mkdir(parents=True)
    (src / "sub-123456_ses-V02_T1w.json").write_text('{"a": NaN}')
    (src / "sub-123456_ses-V02_T2w.json").write_text('{"a": 1}')
    (src / "sub-123456_ses-V02_T1w.nii.gz").write_bytes(gzip.compress(_nifti())[:-9])
    report = deidentify_tree(tmp_path / "assembly_bids", tmp_path / "out", idmap)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in report.skipped}
    assert "NaN is not a JSON number" in reasons[f"sub-{RC1}_ses-V02_T1w.json"]
    assert "truncated" in reasons[f"sub-{RC1}_ses-V02_T1w.nii.gz"]
    assert [w.rsplit("/", 1)[-1] for w in report.written] == [f"sub-{RC1}_ses-V02_T2w.json"]
    leftovers = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert leftovers == [f"sub-{RC1}_ses-V02_T2w.json"]  # nothing half-written


def test_json_decode_error_messages_quote_no_content() -> None:
    # what the JSON position message is built from holds no content of the file
    with pytest.raises(json.JSONDecodeError) as e:
        json.loads('{"PatientName": sub-123456}')
    assert "123456" not in e.value.msg
