from __future__ import annotations

import pytest

from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import (
    UnmappedIdentifierError,
    deidentifier,
    deidentify_path,
    deidentify_text,
    identified_session_prefix,
    parse_session_partition_key,
    partition_key_for_identified,
    reidentify_path,
    reidentify_text,
    session_partition_key,
)

RC1 = "NDARINVAAAA1111"


def test_deidentify_path_file_and_folder_names(idmap: IdentityMap):
    p = "sub-123456/ses-V02/anat/sub-123456_ses-V02_run-001_T1w.nii.gz"
    assert deidentify_path(p, idmap) == (
        f"sub-{RC1}/ses-V02/anat/sub-{RC1}_ses-V02_run-001_T1w.nii.gz"
    )
    assert deidentify_path("sourcedata/UMN/UMN0012_123456/scan.txt", idmap) == (
        f"sourcedata/site01/{RC1}/scan.txt"
    )


def test_pscid_dccid_pair_becomes_one_rc(idmap: IdentityMap):
    assert deidentify_text("UMN0012_123456", idmap) == RC1
    assert deidentify_text("x UMN0012_123456_V02 y", idmap) == f"x {RC1}_V02 y"
    # pair of two different subjects: each replaced on its own
    assert deidentify_text("UMN0012_234567", idmap) == f"{RC1}_NDARINVBBBB2222"
    assert deidentify_text("PSCID UMN0012 alone", idmap) == f"PSCID {RC1} alone"


def test_word_boundaries_keep_codes_containing_an_id(idmap: IdentityMap):
    text = "med 91234567, code X123456, id123456, 1234567 but 123456 and (123456)."
    out = deidentify_text(text, idmap)
    assert out == f"med 91234567, code X123456, id123456, 1234567 but {RC1} and ({RC1})."
    assert deidentify_text("UMNX UMN0012x UMN", idmap) == "UMNX UMN0012x site01"


def test_case_insensitive_and_sites(idmap: IdentityMap):
    assert deidentify_text("umn0012 at umn / Ucsd", idmap) == f"{RC1} at site01 / site02"


def test_html_and_log_text(idmap: IdentityMap):
    html = "<td>sub-123456</td><td class='UMN'>UCSD0034</td>"
    assert deidentify_text(html, idmap) == (
        f"<td>sub-{RC1}</td><td class='site01'>NDARINVBBBB2222</td>"
    )


def test_reidentify(idmap: IdentityMap):
    p = f"ses-V02/qsiprep/sub-{RC1}/ses-V02/dwi/sub-{RC1}_ses-V02_desc-site01_dwi.nii.gz"
    assert reidentify_path(p, idmap) == (
        "ses-V02/qsiprep/sub-123456/ses-V02/dwi/sub-123456_ses-V02_desc-UMN_dwi.nii.gz"
    )
    original = "sub-123456 scanned at UMN; code 91234567"
    assert reidentify_text(deidentify_text(original, idmap), idmap) == original


def test_unmapped_subject_refused_without_revealing_it(idmap: IdentityMap):
    with pytest.raises(UnmappedIdentifierError, match="not a release-candidate ID") as info:
        deidentify_path("sub-999999/ses-V02/anat/x.json", idmap)
    assert "999999" not in str(info.value)
    assert deidentify_path("sub-999999/x.json", idmap, strict=False) == "sub-999999/x.json"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_streaming_equals_whole_text(idmap: IdentityMap, size: int):
    text = (
        "a UMN0012_123456 b 91234567 sub-123456_ses-V02 UCSD0034_234567\n"
        "x_y_UMN0012 _123456_ UMN__UCSD zzz 345678"
    ) * 3
    tr = deidentifier(idmap)
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    assert "".join(tr.iter_text(chunks)) == tr.text(text)


def test_session_partition_key_roundtrip(idmap: IdentityMap):
    key = session_partition_key(RC1, "V02")
    assert key == f"sub-{RC1}_ses-V02"
    assert session_partition_key(f"sub-{RC1}", "ses-V02") == key
    assert parse_session_partition_key(key) == (RC1, "V02")
    with pytest.raises(ValueError, match="not a session partition key"):
        parse_session_partition_key("sub-a_b_ses-V02")
    with pytest.raises(ValueError, match="session label must be ASCII letters and digits"):
        session_partition_key(RC1, "V_02")
    assert partition_key_for_identified("sub-123456", "V02", idmap) == key
    assert identified_session_prefix(key, idmap) == "sub-123456/ses-V02/"
    with pytest.raises(KeyError, match="DCCID not found in identity map") as info:
        partition_key_for_identified("999999", "V02", idmap)
    assert "999999" not in str(info.value)
