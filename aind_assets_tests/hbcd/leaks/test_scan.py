from __future__ import annotations

import codecs
import gzip
import io
import json

import nibabel as nib
import numpy as np
import pytest
import scipy.io

from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.leaks.scan import Finding, redact, scan_for_identifiers

CHUNK = 1 << 20
VALUES = ("123456", "UMN0012", "UMN", "234567", "UCSD0034", "UCSD")


def _no_values(findings: list[Finding]) -> None:
    for f in findings:
        text = str(f) + repr(f)
        for v in VALUES:
            assert v not in text, text


def _kinds(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.location, f.kind) for f in findings]


def test_clean_file_has_no_findings(idmap: IdentityMap):
    text = b"participant NDARINVAAAA1111 at site01; med 91234567; X123456; UMNX\n"
    assert scan_for_identifiers("sub-NDARINVAAAA1111/log.txt", text, idmap) == []


def test_finds_identifiers_in_path_and_content_without_values(idmap: IdentityMap):
    findings = scan_for_identifiers(
        "sub-123456/ses-V02/UMN/log.txt", b"seen UMN0012 then\n(234567)", idmap
    )
    assert _kinds(findings) == [
        ("path", "DCCID"),
        ("path", "site"),
        ("content", "PSCID"),
        ("content", "DCCID"),
    ]
    assert findings[0].path == "sub-<DCCID>/ses-V02/<site>/log.txt"
    assert [f.offset for f in findings] == [4, 19, 5, 19]
    _no_values(findings)


def test_numeric_code_containing_id_is_not_a_leak_but_equal_cell_is(idmap: IdentityMap):
    tsv = b"participant_id\tmedication_code\nsub-NDARINVAAAA1111\t91234567\n"
    assert scan_for_identifiers("participants.tsv", tsv, idmap) == []
    tsv = b"participant_id\tmedication_code\nsub-NDARINVAAAA1111\t123456\n"
    assert _kinds(scan_for_identifiers("participants.tsv", tsv, idmap)) == [("content", "DCCID")]


@pytest.mark.parametrize(
    ("codec", "bom", "encoding"),
    [
        ("utf-16-le", codecs.BOM_UTF16_LE, "utf-16-le"),
        ("utf-16-be", codecs.BOM_UTF16_BE, "utf-16-be"),
        ("utf-16-le", b"", "utf-16-le"),
        ("utf-8", codecs.BOM_UTF8, "ascii"),
    ],
)
def test_finds_identifiers_in_utf16_and_utf8(idmap: IdentityMap, codec, bom, encoding):
    data = bom + "Patient: UMN0012 ✓\n".encode(codec)
    findings = scan_for_identifiers("notes.txt", data, idmap)
    assert [(f.kind, f.encoding) for f in findings] == [("PSCID", encoding)]
    assert findings[0].offset == len(bom) + len("Patient: ".encode(codec))


def test_gzip_fname_and_content_and_second_member(idmap: IdentityMap):
    def member(name: str, payload: bytes) -> bytes:
        buf = io.BytesIO()
        with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=0) as gz:
            gz.write(payload)
        return buf.getvalue()

    clean = member("", b"nothing here\n")
    assert scan_for_identifiers("a.txt.gz", clean, idmap) == []
    leaky_name = member("sub-234567_log.txt", b"nothing here\n")
    assert _kinds(scan_for_identifiers("a.txt.gz", leaky_name, idmap)) == [
        ("gzip[0].FNAME", "DCCID")
    ]
    two = clean + member("UCSD0034.txt", b"x UMN y")  # gzip.GzipFile never shows this header
    assert _kinds(scan_for_identifiers("a.txt.gz", two, idmap)) == [
        ("gzip[1].FNAME", "PSCID"),
        ("content", "site"),
    ]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_gzip_is_unscannable(idmap: IdentityMap, damage: str):
    data = bytearray(gzip.compress(bytes(range(256)) * 100))
    if damage == "truncate":
        data = data[:-20]
    else:
        data[20:40] = b"\xff" * 20
    [f] = scan_for_identifiers("a.log.gz", bytes(data), idmap)
    assert f.kind == "unscannable"
    assert f.location.startswith("unreadable")


def test_nifti_header_and_extension(idmap: IdentityMap):
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
    img.header["aux_file"] = b"UMN0012"
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"dccid 123456"))
    findings = scan_for_identifiers("x.nii.gz", gzip.compress(img.to_bytes()), idmap)
    assert _kinds(findings) == [
        ("nifti.aux_file", "PSCID"),
        ("nifti.extension[0](comment)", "DCCID"),
    ]


def test_nifti_voxel_data_is_not_scanned(idmap: IdentityMap):
    # voxel bytes that happen to spell " UMN " must not be flagged
    data = np.frombuffer(b" UMN " * 8 + b"\0" * 24, dtype=np.uint8).reshape(4, 4, 4)
    img = nib.Nifti1Image(data, np.eye(4))
    assert scan_for_identifiers("x.nii", img.to_bytes(), idmap) == []


def test_json_escaped_identifier_found(idmap: IdentityMap):
    data = json.dumps({"Comment": "id 123456"}, ensure_ascii=True).replace("1", "\\u0031")
    findings = scan_for_identifiers("x.json", data.encode(), idmap)
    assert _kinds(findings) == [("json:/Comment", "DCCID")]


def test_json_keys_are_redacted_in_locations(idmap: IdentityMap):
    data = json.dumps({"Levels": {"UMN": "x"}}).encode()
    findings = scan_for_identifiers("x.json", data, idmap)
    assert ("json:/Levels/(key)", "site") in _kinds(findings)
    _no_values(findings)


def test_tokens_across_chunk_boundaries(idmap: IdentityMap):
    spanning = b"x" * (CHUNK - 3) + b" 123456 \n"
    assert [f.offset for f in scan_for_identifiers("a.txt", spanning, idmap)] == [CHUNK - 2]
    long_token = b"9" * (CHUNK - 3) + b"123456 \n"  # one long number: not an identifier
    assert scan_for_identifiers("a.txt", long_token, idmap) == []
    code = b" " * (CHUNK - 3) + b"91234567\n"
    assert scan_for_identifiers("a.txt", code, idmap) == []
    after_long = b"9" * (3 * CHUNK) + b" UMN\n"
    assert _kinds(scan_for_identifiers("a.txt", after_long, idmap)) == [("content", "site")]


def test_stream_input_and_plain_mapping(idmap: IdentityMap):
    findings = scan_for_identifiers("a.txt", io.BytesIO(b"hello FOO42"), {"foo42": "PSCID"})
    assert _kinds(findings) == [("content", "PSCID")]


def test_max_findings(idmap: IdentityMap):
    findings = scan_for_identifiers("a.txt", b"123456 " * 50, idmap, max_findings=10)
    assert len(findings) == 10


def test_redact(idmap: IdentityMap):
    assert redact("sub-123456/UMN0012_x/91234567", idmap) == "sub-<DCCID>/<PSCID>_x/91234567"


def test_matlab_set_strings_scanned_samples_not(idmap: IdentityMap):
    """An EEGLAB ``.set`` (MATLAB v5, compressed: invisible to the text views) is parsed: its
    strings and names are scanned, its sample array is not (bytes spelling a site code)."""
    samples = np.frombuffer(b" UMN" * 64, dtype="<f4").reshape(4, 16)
    clean = io.BytesIO()
    scipy.io.savemat(clean, {"data": samples, "setname": "rest"}, oned_as="row")
    assert scan_for_identifiers("x.set", clean.getvalue(), idmap) == []
    leaky = io.BytesIO()
    eeg = {"subject": "UMN0012", "event": {"type": np.array(["stim 123456"], dtype=object)}}
    scipy.io.savemat(leaky, {"EEG": eeg, "data": samples}, do_compression=True, oned_as="row")
    found = scan_for_identifiers("x.set", leaky.getvalue(), idmap)
    assert {(f.location, f.kind) for f in found} == {
        ("mat:EEG.subject", "PSCID"),
        ("mat:EEG.event.type{}", "DCCID"),
    }
    _no_values(found)
