"""More HBCD modalities for the demo tree (``aind-assets demo seed``): an EEG recording (EDF+,
with the identifiers a site's export leaves in its header), an MR spectroscopy file (NIfTI-MRS
with a JSON header extension carrying DICOM-derived fields) and a sessionless subject
(subject-level data outside any ``ses-*`` folder). Identifiers are planted where real exports
leave them, so the whole flow shows them replaced."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from aind_assets.hbcd.identity.idmap import IdentityRow

__all__ = ["edf_bytes", "write_eeg", "write_mrs", "write_sessionless"]


def _field(text: str, width: int) -> bytes:
    return text.encode("ascii")[:width].ljust(width, b" ")


def edf_bytes(row: IdentityRow, *, seconds: int = 4, rate: int = 128) -> bytes:
    """A small EDF+ file (two EEG channels and an annotation channel) written to the spec."""
    labels = ["EEG Fz", "EEG Cz", "EDF Annotations"]
    ns, samples = len(labels), [rate, rate, 30]
    header = b"".join(
        [
            _field("0", 8),
            _field(f"{row.pscid} F 12-APR-2023 Doe_Jane", 80),
            _field(f"Startdate 01-MAR-2024 {row.dccid} Smith {row.site}_EGI", 80),
            _field("01.03.24", 8),
            _field("10.10.10", 8),
            _field(str(256 * (ns + 1)), 8),
            _field("EDF+C", 44),
            _field(str(seconds), 8),
            _field("1", 8),
            _field(str(ns), 4),
        ]
    )
    per_signal = [
        [_field(label, 16) for label in labels],
        [_field("AgCl electrode", 80)] * 2 + [_field("", 80)],
        [_field("uV", 8)] * 2 + [_field("", 8)],
        [_field("-500", 8)] * 2 + [_field("-1", 8)],
        [_field("500", 8)] * 2 + [_field("1", 8)],
        [_field("-32768", 8)] * 3,
        [_field("32767", 8)] * 3,
        [_field("HP:0.1Hz LP:40Hz", 80)] * 2 + [_field("", 80)],
        [_field(str(n), 8) for n in samples],
        [_field("", 32)] * 3,
    ]
    header += b"".join(b"".join(group) for group in per_signal)
    rng = np.random.default_rng(1)
    records = []
    for sec in range(seconds):
        data = rng.integers(-2000, 2000, (2, rate), dtype=np.int16).astype("<i2").tobytes()
        tal = f"+{sec}\x14\x14\x00".encode()
        if sec == 1:
            tal += f"+1.5\x14eyes closed {row.dccid}\x14\x00".encode()
        records.append(data + tal.ljust(samples[2] * 2, b"\0"))
    return header + b"".join(records)


def write_eeg(ses_dir: Path, stem: str, row: IdentityRow) -> str:
    """EEG of a session (``eeg/<stem>_task-rest_eeg.edf`` + sidecars); returns the data
    file's path in the session (for ``scans.tsv``)."""
    eeg = ses_dir / "eeg"
    eeg.mkdir(parents=True, exist_ok=True)
    rel = f"eeg/{stem}_task-rest_eeg.edf"
    (ses_dir / rel).write_bytes(edf_bytes(row))
    sidecar = {
        "TaskName": "rest",
        "SamplingFrequency": 128,
        "EEGReference": "Cz",
        "PowerLineFrequency": 60,
        "SoftwareFilters": "n/a",
        "InstitutionName": f"{row.site} EEG lab",
    }
    (eeg / f"{stem}_task-rest_eeg.json").write_text(json.dumps(sidecar, indent=4) + "\n")
    (eeg / f"{stem}_task-rest_channels.tsv").write_text(
        "name\ttype\tunits\nEEG Fz\tEEG\tuV\nEEG Cz\tEEG\tuV\n"
    )
    return rel


def write_mrs(ses_dir: Path, stem: str, row: IdentityRow) -> str:
    """A NIfTI-MRS single-voxel spectrum (``mrs/<stem>_svs.nii.gz``); returns its path."""
    data = (np.arange(256) * (1 - 0.5j)).astype(np.complex64).reshape(1, 1, 1, 256)
    img = nib.Nifti2Image(data, np.eye(4))
    img.header["intent_name"] = b"mrs_v0_9"
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 1 / 2000
    meta = {
        "SpectrometerFrequency": [123.25],
        "ResonantNucleus": ["1H"],
        "PatientName": row.pscid,
        "PatientID": row.dccid,
        "PatientBirthDate": "20230412",
        "ConversionMethod": f"spec2nii, {row.site}",
    }
    img.header.extensions.append(nib.nifti1.Nifti1Extension(44, json.dumps(meta).encode()))
    rel = f"mrs/{stem}_svs.nii.gz"
    (ses_dir / "mrs").mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(filename=f"{stem}_svs.nii", mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(img.to_bytes())
    (ses_dir / rel).write_bytes(buf.getvalue())
    (ses_dir / "mrs" / f"{stem}_svs.json").write_text(
        json.dumps(
            {
                "EchoTime": 0.03,
                "RepetitionTime": 2.0,
                "ResonantNucleus": "1H",
                "SpectrometerFrequency": 123.25,
                "SpectralWidth": 2000.0,
                "PatientID": row.dccid,
            }
        )
        + "\n"
    )
    return rel


def write_sessionless(sub_dir: Path, row: IdentityRow) -> None:
    """A subject with data outside any session folder (sessionless BIDS)."""
    sub = sub_dir.name
    anat = sub_dir / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4))
    img.header["descrip"] = f"{row.pscid} {row.dccid}".encode()
    nib.save(img, anat / f"{sub}_T1w.nii.gz")
    (anat / f"{sub}_T1w.json").write_text(json.dumps({"PatientID": row.dccid}) + "\n")
