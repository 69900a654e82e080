from __future__ import annotations

import codecs
import gzip
import io
import json
from pathlib import Path

import pytest

from aind_assets.hbcd.formats.base import DeidentificationError, UnsupportedFileType
from aind_assets.hbcd.formats.dispatch import (
    deidentify_bytes,
    deidentify_file,
    deidentify_tree,
    handler_for,
    reidentify_bytes,
)
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import UnmappedIdentifierError
from aind_assets.hbcd.leaks.scan import scan_for_identifiers

RC1, RC2 = "NDARINVAAAA1111", "NDARINVBBBB2222"


# --- TSV -----------------------------------------------------------------------------------


def test_tsv_only_id_columns_change_and_cells_stay_strings(idmap: IdentityMap):
    src = (
        b"participant_id\tsite\tsex\tmedication_code\tweight\tscore\tnote\r\n"
        b"sub-123456\tUMN\tM\t91234567\t3.50\t7\tn/a\r\n"
        b"sub-234567\tUCSD\tF\t123456\t0012\t_NaN_\t\r\n"
    )
    new, out = deidentify_bytes("participants.tsv", src, idmap)
    assert new == "participants.tsv"
    assert out.decode() == (
        "participant_id\tsite\tsex\tmedication_code\tweight\tscore\tnote\r\n"
        f"sub-{RC1}\tsite01\tM\t91234567\t3.50\t7\tn/a\r\n"
        # non-ID columns are untouched, even a cell equal to a DCCID (the leak check flags it)
        f"sub-{RC2}\tsite02\tF\t123456\t0012\t_NaN_\t\r\n"
    )


def test_tsv_integers_never_become_decimals(idmap: IdentityMap):
    src = "participant_id\tage\tQU_motion\nsub-123456\t12\t1\nsub-234567\tn/a\t3\n"
    _, out = deidentify_bytes("sub-123456/ses-V02/x_scans.tsv", src.encode(), idmap)
    rows = [line.split("\t") for line in out.decode().splitlines()[1:]]
    assert [r[1:] for r in rows] == [["12", "1"], ["n/a", "3"]]


def test_scans_tsv_filename_column(idmap: IdentityMap):
    src = (
        "filename\tacq_time\tHBCD_compliant\tQU_motion\n"
        "anat/sub-123456_ses-V02_run-001_T1w.nii.gz\t2024-01-01T10:00:00\tYes\t2\n"
    )
    new, out = deidentify_bytes(
        "sub-123456/ses-V02/sub-123456_ses-V02_scans.tsv", src.encode(), idmap
    )
    assert new == f"sub-{RC1}/ses-V02/sub-{RC1}_ses-V02_scans.tsv"
    assert out.decode().splitlines()[1] == (
        f"anat/sub-{RC1}_ses-V02_run-001_T1w.nii.gz\t2024-01-01T10:00:00\tYes\t2"
    )


def test_tsv_drops_rows_of_unmapped_participants(idmap: IdentityMap):
    src = "participant_id\tsite\nsub-123456\tUMN\nsub-999999\tUMN\n"
    notes: list[str] = []
    out = io.BytesIO()
    deidentify_file("participants.tsv", io.BytesIO(src.encode()), out, idmap, notes=notes)
    assert out.getvalue().decode() == f"participant_id\tsite\nsub-{RC1}\tsite01\n"
    assert notes == ["TSV: dropped 1 row(s) whose participant_id is not mapped"]


def test_tsv_utf16_keeps_encoding(idmap: IdentityMap):
    text = "participant_id\tsite\nsub-123456\tUMN\n"
    src = codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    _, out = deidentify_bytes("participants.tsv", src, idmap)
    assert out.startswith(codecs.BOM_UTF16_LE)
    assert out[2:].decode("utf-16-le") == f"participant_id\tsite\nsub-{RC1}\tsite01\n"


def test_sessions_tsv_gz_drops_fname(idmap: IdentityMap):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="sub-123456_sessions.tsv", mode="wb", fileobj=buf) as gz:
        gz.write(b"session_id\tsite\nses-V02\tUMN\n")
    new, out = deidentify_bytes("sub-123456/sub-123456_sessions.tsv.gz", buf.getvalue(), idmap)
    assert buf.getvalue()[3] & 0x08  # the source had FNAME
    assert not out[3] & 0x08
    assert gzip.decompress(out) == b"session_id\tsite\nses-V02\tsite01\n"
    assert new.endswith(f"sub-{RC1}_sessions.tsv.gz")


# --- JSON ----------------------------------------------------------------------------------


def test_json_sidecar(idmap: IdentityMap):
    sidecar = {
        "PatientName": "UMN0012",
        "PatientID": "123456",
        "PatientBirthDate": "20230101",
        "InstitutionName": "Some Hospital",
        "InstitutionAddress": "Street 1",
        "InstitutionalDepartmentName": "Radiology",
        "EchoTime": 0.00222,
        "SeriesNumber": 5,
        "ImageComments": "UMN0012_123456 visit V02 at UMN, kit 91234567",
        "IntendedFor": "bids::sub-123456/ses-V02/func/sub-123456_ses-V02_bold.nii.gz",
        "Nested": {"PatientID": "123456", "list": ["sub-123456", 123456, None, True]},
        "Unicode": "µs ✓",
    }
    new, out = deidentify_bytes(
        "sub-123456/ses-V02/fmap/sub-123456_ses-V02_epi.json", json.dumps(sidecar).encode(), idmap
    )
    got = json.loads(out)
    assert new == f"sub-{RC1}/ses-V02/fmap/sub-{RC1}_ses-V02_epi.json"
    assert got == {
        "EchoTime": 0.00222,
        "SeriesNumber": 5,
        "ImageComments": f"{RC1} visit V02 at site01, kit 91234567",
        "IntendedFor": f"bids::sub-{RC1}/ses-V02/func/sub-{RC1}_ses-V02_bold.nii.gz",
        # numbers are not free text: a numeric value equal to a DCCID is left (and flagged)
        "Nested": {"list": [f"sub-{RC1}", 123456, None, True]},
        "Unicode": "µs ✓",
    }
    assert b'"SeriesNumber": 5,' in out  # integers stay integers


def test_json_intended_for_list_and_levels(idmap: IdentityMap):
    src = {
        "IntendedFor": ["ses-V02/func/sub-123456_ses-V02_bold.nii.gz", "bids::sub-234567/x"],
        "site": {"Levels": {"UMN": "Site UMN", "UCSD": "UCSD0034 site"}},
        "session_id": {"Levels": {"ses-V02": "Visit of UMN0012"}},
    }
    _, out = deidentify_bytes(
        "sub-123456/sub-123456_sessions.json", json.dumps(src).encode(), idmap
    )
    assert json.loads(out) == {
        "IntendedFor": [f"ses-V02/func/sub-{RC1}_ses-V02_bold.nii.gz", f"bids::sub-{RC2}/x"],
        "site": {"Levels": {"site01": "Site site01", "site02": f"{RC2} site"}},
        "session_id": {"Levels": {"ses-V02": f"Visit of {RC1}"}},
    }


def test_json_invalid_is_an_error_without_content(idmap: IdentityMap):
    with pytest.raises(DeidentificationError, match="json: invalid JSON") as info:
        deidentify_bytes("sub-123456/x.json", b'{"PatientID": "123456",', idmap)
    assert "123456" not in str(info.value)
    assert f"sub-{RC1}/x.json" in str(info.value)


# --- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "bom"),
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-16-le", b""),
        ("utf-32-le", codecs.BOM_UTF32_LE),
    ],
)
def test_text_encodings_round_trip(idmap: IdentityMap, codec: str, bom: bytes):
    text = "Subject UMN0012_123456 (ü) at UMN\r\nmed 91234567\n"
    _, out = deidentify_bytes("derivatives/report.html", bom + text.encode(codec), idmap)
    assert out.startswith(bom)
    assert out[len(bom) :].decode(codec) == f"Subject {RC1} (ü) at site01\r\nmed 91234567\n"
    assert scan_for_identifiers("report.html", out, idmap) == []


def test_text_latin1_bytes_preserved(idmap: IdentityMap):
    src = "café 123456 naïve\n".encode("latin-1")  # not valid UTF-8
    _, out = deidentify_bytes("log.txt", src, idmap)
    assert out == f"café {RC1} naïve\n".encode("latin-1")


def test_text_streaming_across_chunks(idmap: IdentityMap):
    chunk = 1 << 20
    filler = "x" * (chunk - 5)
    src = (filler + " 123456 " + "9" * chunk + " UMN0012_123456\n").encode()
    _, out = deidentify_bytes("big.log", src, idmap)
    assert out == (filler + f" {RC1} " + "9" * chunk + f" {RC1}\n").encode()


@pytest.mark.parametrize("name", ["README", "CHANGES", "bvecs.bvec", "x.bval", "a.md", "c.csv"])
def test_text_allow_list(name: str):
    assert handler_for(name).name == "text"


# --- allow-list ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relpath",
    ["sub-123456/x.dcm", "a.zip", "report.pdf", "blob.bin", "x.tar.gz", "noext"],
)
def test_unsupported_types_are_not_copied(idmap: IdentityMap, relpath: str):
    assert handler_for(relpath) is None
    dst = io.BytesIO()
    with pytest.raises(
        UnsupportedFileType, match="not in the de-identification allow-list"
    ) as info:
        deidentify_file(relpath, io.BytesIO(b"123456 data"), dst, idmap)
    assert dst.getvalue() == b""
    assert "123456" not in str(info.value)


def test_handler_names():
    assert handler_for("a/b.nii.gz").name == "nifti.gz"
    assert handler_for("a/b.NII").name == "nifti"
    assert handler_for("a/b_physio.tsv.gz").name == "tsv.gz"
    assert handler_for("a/b.json").name == "json"
    assert handler_for("a/b.log.gz").name == "text.gz"


def test_deidentify_file_refuses_unmapped_subject(idmap: IdentityMap):
    with pytest.raises(UnmappedIdentifierError, match="not a release-candidate ID") as info:
        deidentify_file("sub-999999/x.json", io.BytesIO(b"{}"), io.BytesIO(), idmap)
    assert "999999" not in str(info.value)


def test_deidentify_tree_reports_skips(tmp_path: Path, idmap: IdentityMap):
    src = tmp_path / "src"
    (src / "sub-123456").mkdir(parents=True)
    (src / "sub-999999").mkdir()
    (src / "sub-123456" / "sub-123456_scan.dcm").write_bytes(b"DICM 123456")
    (src / "sub-123456" / "notes.txt").write_text("UMN0012\n")
    (src / "sub-123456" / "bad.json").write_text("{")
    (src / "sub-999999" / "x.txt").write_text("hello\n")
    report = deidentify_tree(src, tmp_path / "dst", idmap)
    assert report.written == [f"sub-{RC1}/notes.txt"]
    reasons = {s.reason.split(":")[0] for s in report.skipped}
    assert "file type not in allow-list" in reasons
    assert "subject not in identity map" in reasons
    assert f"sub-{RC1}/bad.json" in reasons
    assert "999999" not in repr(report) and "123456" not in repr(report)
    dst_files = [p for p in (tmp_path / "dst").rglob("*") if p.is_file()]
    assert [p.relative_to(tmp_path / "dst").as_posix() for p in dst_files] == report.written


# --- re-identification -----------------------------------------------------------------------


def test_reidentify_text_and_binary(idmap: IdentityMap):
    rel = f"ses-V02/bibsnet/sub-{RC1}/ses-V02/anat/sub-{RC1}_ses-V02_desc-report.html"
    new, out = reidentify_bytes(rel, f"<p>sub-{RC1} site01</p>".encode(), idmap)
    assert new == "ses-V02/bibsnet/sub-123456/ses-V02/anat/sub-123456_ses-V02_desc-report.html"
    assert out == b"<p>sub-123456 UMN</p>"
    png = b"\x89PNG\r\n\x1a\n" + RC1.encode()
    new, out = reidentify_bytes(f"sub-{RC1}_figure.png", png, idmap)
    assert (new, out) == ("sub-123456_figure.png", png)  # copied as is
