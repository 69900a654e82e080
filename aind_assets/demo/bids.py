"""A small, deterministic, *identified* HBCD-style BIDS tree for demos and tests.

Identifiers are planted in every place DESIGN §4 lists: folder and file names, ``scans.tsv``
``filename``, ``participants.tsv`` / ``sessions.tsv`` cells, ``sessions.json`` and
``participants.json`` ``Levels``, JSON sidecars (``PatientName``, ``PatientID``,
``PatientBirthDate``, ``Institution*``, ``IntendedFor``, free text in ``ImageComments``), NIfTI
header ``descrip`` / ``aux_file`` / ``db_name`` / ``intent_name``, a NIfTI comment extension, and
the gzip FNAME of every ``.nii.gz``. ``participants.tsv`` also has a numeric ``medication_code``
that contains the subject's DCCID as a substring (it must survive de-identification unchanged).

Layout (``root/``)::

    assembly_bids/
      dataset_description.json  README  participants.tsv  participants.json
      sub-<DCCID>/
        sub-<DCCID>_sessions.tsv  sub-<DCCID>_sessions.json
        ses-V02/
          sub-<DCCID>_ses-V02_scans.tsv
          anat/sub-<DCCID>_ses-V02_run-001_T1w.nii.gz (+ .json)
          func/sub-<DCCID>_ses-V02_task-rest_run-001_bold.nii.gz (+ .json)
          fmap/sub-<DCCID>_ses-V02_dir-PA_run-001_epi.nii.gz (+ .json, IntendedFor)
    identifiers/release_identifiers.csv
"""

from __future__ import annotations

import gzip
import io
import json
import random
import string
from pathlib import Path

import nibabel as nib
import numpy as np

from aind_assets.demo.bids_extras import write_eeg, write_mrs, write_sessionless
from aind_assets.hbcd.identity.idmap import IdentityRow, format_identity_map

__all__ = ["DEMO_SITES", "IDENTITY_MAP_RELPATH", "demo_identity_rows", "write_identified_bids"]

DEMO_SITES: tuple[str, ...] = ("UMN", "UCSD", "WUSTL")
IDENTITY_MAP_RELPATH = "identifiers/release_identifiers.csv"
_RC_CHARS = string.ascii_uppercase + string.digits


def demo_identity_rows(n_subjects: int = 5, seed: int = 0) -> list[IdentityRow]:
    """Deterministic identity rows: 6-digit DCCIDs, PSCIDs like ``UMN0012``, GUID-like
    release-candidate IDs ``NDARINV…``, anonymized sites ``site01``…"""
    rng = random.Random(seed)
    dccids = rng.sample(range(100000, 1000000), n_subjects)
    pscid_numbers = rng.sample(range(1, 10000), n_subjects)
    rows = []
    seen_rc: set[str] = set()
    for i in range(n_subjects):
        site = DEMO_SITES[i % len(DEMO_SITES)]
        while True:
            rc = "NDARINV" + "".join(rng.choice(_RC_CHARS) for _ in range(8))
            if rc not in seen_rc:
                seen_rc.add(rc)
                break
        rows.append(
            IdentityRow(
                dccid=str(dccids[i]),
                pscid=f"{site}{pscid_numbers[i]:04d}",
                site=site,
                rc_id=rc,
                anon_site=f"site{DEMO_SITES.index(site) + 1:02d}",
            )
        )
    return rows


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4) + "\n", encoding="utf-8")


def _write_tsv(path: Path, columns: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(columns)] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_nifti(
    path: Path, data: np.ndarray, row: IdentityRow, *, comment: str | None = None
) -> None:
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    hdr = img.header
    hdr["descrip"] = f"{row.pscid}_{row.dccid} TE=2.2;Time=101010.000".encode()
    hdr["aux_file"] = row.pscid.encode()
    hdr["db_name"] = row.site.encode()
    hdr["intent_name"] = row.dccid.encode()
    if data.ndim == 4:
        hdr.set_xyzt_units("mm", "sec")
        hdr["pixdim"][4] = 2.4
    if comment is not None:
        hdr.extensions.append(nib.nifti1.Nifti1Extension("comment", comment.encode()))
    raw = img.to_bytes()
    buf = io.BytesIO()
    # the original file name (with the DCCID) lands in the gzip FNAME field, as gzip(1) does
    with gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def _sidecar(row: IdentityRow, ses: str, **extra: object) -> dict:
    return {
        "Modality": "MR",
        "MagneticFieldStrength": 3,
        "Manufacturer": "Siemens",
        "PatientName": row.pscid,
        "PatientID": row.dccid,
        "PatientBirthDate": "20230412",
        "InstitutionName": f"{row.site} Center for Magnetic Resonance Research",
        "InstitutionAddress": f"2021 6th St SE, Minneapolis, {row.site}",
        "InstitutionalDepartmentName": f"Radiology {row.site}",
        "ImageComments": f"{row.pscid}_{row.dccid} visit {ses}",
        "AcquisitionTime": "10:10:10.000000",
        "SeriesNumber": 5,
        **extra,
    }


def write_identified_bids(
    root: Path,
    *,
    n_subjects: int = 5,
    sessions: tuple[str, ...] = ("V02", "V03"),
    seed: int = 0,
    extras: bool = False,
) -> Path:
    """Write the identified tree under ``root/assembly_bids`` and the identity map CSV under
    ``root/identifiers/release_identifiers.csv``; returns the CSV's path (its text is the
    identity map for :func:`aind_assets.hbcd.identity.idmap.parse_identity_map`). Deterministic.
    With ``extras`` (the demo seed): the first subject's first session also has EEG (EDF+) and
    MR spectroscopy (NIfTI-MRS), and one more subject has no session folder
    (:mod:`aind_assets.demo.bids_extras`)."""
    root = Path(root)
    bids = root / "assembly_bids"
    rows = demo_identity_rows(n_subjects + (1 if extras else 0), seed)
    rng = random.Random(seed + 1)
    nrng = np.random.default_rng(seed)

    _write_json(
        bids / "dataset_description.json",
        {"Name": "HBCD demo (synthetic, identified)", "BIDSVersion": "1.9.0", "DatasetType": "raw"},
    )
    (bids / "README").write_text(
        "Synthetic HBCD-style data for aind-assets demos and tests. Not real subjects.\n",
        encoding="utf-8",
    )
    participants = []
    for i, row in enumerate(rows):
        participants.append(
            [
                f"sub-{row.dccid}",
                row.site,
                rng.choice(["M", "F"]),
                "n/a" if i == 1 else str(rng.randint(36, 41)),
                f"9{row.dccid}7",  # numeric code containing the DCCID as a substring
            ]
        )
    _write_tsv(
        bids / "participants.tsv",
        ["participant_id", "site", "sex", "gestational_age", "medication_code"],
        participants,
    )
    _write_json(
        bids / "participants.json",
        {
            "participant_id": {"Description": "Participant label"},
            "site": {
                "Description": "Acquisition site",
                "Levels": {s: f"Site {s}" for s in DEMO_SITES[: min(len(DEMO_SITES), n_subjects)]},
            },
            "gestational_age": {"Description": "Gestational age at birth", "Units": "weeks"},
            "medication_code": {"Description": "Maternal medication code"},
        },
    )

    for row in rows:
        sub = f"sub-{row.dccid}"
        sdir = bids / sub
        if extras and row is rows[-1]:
            write_sessionless(sdir, row)
            continue
        _write_tsv(
            sdir / f"{sub}_sessions.tsv",
            ["session_id", "age", "site"],
            [[f"ses-{ses}", str(rng.randint(10, 400)), row.site] for ses in sessions],
        )
        _write_json(
            sdir / f"{sub}_sessions.json",
            {
                "session_id": {
                    "Description": "Visit",
                    "Levels": {f"ses-{ses}": f"Visit {ses} of {row.pscid}" for ses in sessions},
                },
                "age": {"Description": "Age at visit", "Units": "days"},
                "site": {"Description": "Acquisition site", "Levels": {row.site: "Site"}},
            },
        )
        for ses in sessions:
            ses_dir = sdir / f"ses-{ses}"
            stem = f"{sub}_ses-{ses}"
            t1 = f"anat/{stem}_run-001_T1w.nii.gz"
            bold = f"func/{stem}_task-rest_run-001_bold.nii.gz"
            epi = f"fmap/{stem}_dir-PA_run-001_epi.nii.gz"
            _write_nifti(
                ses_dir / t1,
                nrng.integers(0, 1000, (8, 8, 8), dtype=np.int16),
                row,
                comment=f"converted for {row.pscid} (candidate {row.dccid}) at {row.site}",
            )
            _write_nifti(ses_dir / bold, nrng.integers(0, 1000, (8, 8, 8, 4), dtype=np.int16), row)
            _write_nifti(ses_dir / epi, nrng.integers(0, 1000, (8, 8, 8), dtype=np.int16), row)
            _write_json(ses_dir / t1.replace(".nii.gz", ".json"), _sidecar(row, ses))
            _write_json(
                ses_dir / bold.replace(".nii.gz", ".json"),
                _sidecar(row, ses, TaskName="rest", RepetitionTime=2.4),
            )
            _write_json(
                ses_dir / epi.replace(".nii.gz", ".json"),
                _sidecar(
                    row,
                    ses,
                    PhaseEncodingDirection="j",
                    TotalReadoutTime=0.05,
                    IntendedFor=[f"ses-{ses}/{bold}", f"bids::{sub}/ses-{ses}/{bold}"],
                ),
            )
            more: list[str] = []
            if extras and row is rows[0] and ses == sessions[0]:
                more = [write_eeg(ses_dir, stem, row), write_mrs(ses_dir, stem, row)]
            scans = []
            for rel in (t1, bold, epi, *more):
                motion = "_NaN_" if rel is epi or rel in more else str(rng.randint(1, 3))
                scans.append(
                    [
                        rel,
                        f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:10:10",
                        rng.choice(["Yes", "Yes", "No"]),
                        motion,
                    ]
                )
            _write_tsv(
                ses_dir / f"{stem}_scans.tsv",
                ["filename", "acq_time", "HBCD_compliant", "QU_motion"],
                scans,
            )

    map_path = root / IDENTITY_MAP_RELPATH
    map_path.parent.mkdir(parents=True, exist_ok=True)
    map_path.write_text(format_identity_map(rows), encoding="utf-8")
    return map_path
