"""NIfTI-MRS de-identification on a file written by nibabel with a NIfTI-MRS JSON header
extension (ecode 44) carrying DICOM-derived fields, identifiers planted in every field that can
hold one; the spectral data stays byte for byte; the leak scanner reads the extension (parsed,
so escaped identifiers are found too)."""

from __future__ import annotations

import gzip
import io
import json

import nibabel as nib
import numpy as np

from aind_assets.hbcd.formats.dispatch import deidentify_bytes, handler_for
from aind_assets.hbcd.formats.nifti import read_nifti_prefix
from aind_assets.hbcd.identity.idmap import IdentityMap, IdentityRow
from aind_assets.hbcd.leaks.scan import scan_for_identifiers


def _mrs_bytes(row: IdentityRow) -> tuple[bytes, np.ndarray]:
    data = (
        (np.arange(1 * 1 * 1 * 512 * 4) * (1 + 0.5j)).astype(np.complex64).reshape(1, 1, 1, 512, 4)
    )
    img = nib.Nifti2Image(data, np.eye(4))
    header = {
        "SpectrometerFrequency": [123.2],
        "ResonantNucleus": ["1H"],
        "dim_5": "DIM_COIL",
        "PatientName": "Doe^Jane",
        "PatientID": row.dccid,
        "PatientBirthDate": "20230412",
        "InstitutionName": f"{row.site} hospital",
        "ConversionMethod": f"spec2nii for \\u0020{row.pscid}",
        "OriginalFile": [f"sub-{row.dccid}_svs.dat"],
    }
    text = json.dumps(header).replace(f"\\\\u0020{row.pscid}", "\\u0055MN0012")
    img.header.extensions.append(nib.nifti1.Nifti1Extension(44, text.encode()))
    img.header["descrip"] = f"{row.pscid} {row.site}".encode()
    img.header["intent_name"] = b"mrs_v0_9"
    img.header["aux_file"] = row.dccid.encode()
    raw = gzip.compress(img.to_bytes(), mtime=0)
    return raw, data


def test_nifti_mrs_header_extension_rewritten_data_unchanged(
    idmap: IdentityMap, row: IdentityRow
) -> None:
    rel = f"sub-{row.dccid}/ses-V02/mrs/sub-{row.dccid}_ses-V02_svs.nii.gz"
    raw, data = _mrs_bytes(row)
    assert handler_for(rel) is not None and handler_for(rel).name == "nifti-mrs.gz"  # type: ignore[union-attr]
    findings = scan_for_identifiers(rel, raw, idmap)
    assert any(f.location.startswith("json:") for f in findings)  # the \u-escaped PSCID
    assert any(f.location.startswith("nifti.extension") for f in findings)

    new_rel, out = deidentify_bytes(rel, raw, idmap)
    assert scan_for_identifiers(new_rel, out, idmap) == []
    plain_in, plain_out = gzip.decompress(raw), gzip.decompress(out)
    info_in, _, _ = read_nifti_prefix(io.BytesIO(plain_in))
    info_out, _, exts = read_nifti_prefix(io.BytesIO(plain_out))
    assert plain_out[info_out.vox_offset :] == plain_in[info_in.vox_offset :]  # spectra
    meta = json.loads(exts[0].content.rstrip(b"\0"))
    assert exts[0].ecode == 44
    for key in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName"):
        assert key not in meta
    assert meta["SpectrometerFrequency"] == [123.2] and meta["dim_5"] == "DIM_COIL"
    assert meta["OriginalFile"] == [f"sub-{row.rc_id}_svs.dat"]
    assert meta["ConversionMethod"] == f"spec2nii for {row.rc_id}"
    img = nib.Nifti2Image.from_bytes(plain_out)
    assert np.array_equal(np.asanyarray(img.dataobj), data)
    assert img.header["intent_name"].tobytes().rstrip(b"\0") == b"mrs_v0_9"
    assert img.header["descrip"].tobytes().rstrip(b"\0") == f"{row.rc_id} {row.anon_site}".encode()
