"""Rebuilt release tables and sidecars (pure): ``scans.tsv``, ``sessions.tsv`` and
``participants.tsv`` narrowed to what the release keeps, ``dataset_description.json``, and
fieldmap ``IntendedFor`` pruned of targets the release leaves out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from aind_assets.hbcd.formats.tsv import select_tsv_rows
from aind_assets.hbcd.release.spec import ReleaseSpec


# --- TSV / JSON rebuilding -------------------------------------------------------------------
def rebuild_scans_tsv(scans_tsv: str, keep_filenames: Iterable[str]) -> str:
    """``scans.tsv`` with only the rows of files included in the release."""
    keep = set(keep_filenames)
    return select_tsv_rows(scans_tsv, lambda r: r.get("filename") in keep)


def rebuild_sessions_tsv(sessions_tsv: str, keep_sessions: Iterable[str]) -> str:
    """``sessions.tsv`` with only the released sessions (``V02`` or ``ses-V02``)."""
    keep = {s if s.startswith("ses-") else f"ses-{s}" for s in keep_sessions}
    return select_tsv_rows(sessions_tsv, lambda r: r.get("session_id") in keep)


def rebuild_participants_tsv(participants_tsv: str, keep_subjects: Iterable[str]) -> str:
    """``participants.tsv`` with only the released participants (``RC`` or ``sub-RC``)."""
    keep = {s if s.startswith("sub-") else f"sub-{s}" for s in keep_subjects}
    return select_tsv_rows(participants_tsv, lambda r: r.get("participant_id") in keep)


def rebuild_dataset_description(
    source_json: str | None, spec: ReleaseSpec, generated_by: Mapping[str, Any]
) -> str:
    """The raw dataset's ``dataset_description.json``: the source's fields, ``Name`` from the
    spec if given, ``DatasetType`` raw, a ``BIDSVersion``, and this step in ``GeneratedBy``
    (no timestamps: the same inputs give the same bytes)."""
    desc: dict[str, Any] = {}
    if source_json:
        try:
            loaded = json.loads(source_json)
        except ValueError:
            raise ValueError("assembly_bids/dataset_description.json is not valid JSON") from None
        if not isinstance(loaded, dict):
            raise ValueError("assembly_bids/dataset_description.json is not a JSON object")
        desc.update(loaded)
    desc["Name"] = spec.dataset_name or desc.get("Name") or f"HBCD release {spec.release}"
    desc.setdefault("BIDSVersion", "1.9.0")
    desc["DatasetType"] = "raw"
    previous = [g for g in desc.get("GeneratedBy") or [] if isinstance(g, dict)]
    desc["GeneratedBy"] = [
        *[g for g in previous if g.get("Name") != generated_by.get("Name")],
        dict(generated_by),
    ]
    return json.dumps(desc, indent=4, sort_keys=False) + "\n"


def prune_intended_for(sidecar: str, subject: str, removed: Iterable[str]) -> str | None:
    """A fieldmap sidecar without the ``IntendedFor`` targets the release leaves out.

    ``removed`` holds paths relative to the subject folder (``ses-V02/func/…_bold.nii.gz``);
    targets may be written that way or as BIDS URIs (``bids::sub-X/ses-V02/func/…``). Returns
    the new JSON, without ``IntendedFor`` when nothing is left, or ``None`` when nothing changes
    (the file is then copied byte for byte). A dangling target is a BIDS error.
    """
    gone = set(removed)
    try:
        meta = json.loads(sidecar)
    except ValueError:
        return None  # not ours to fix; the validity check reports broken JSON
    if not isinstance(meta, dict) or "IntendedFor" not in meta:
        return None
    targets = meta["IntendedFor"]
    listed = [targets] if isinstance(targets, str) else list(targets or [])

    def in_subject(target: Any) -> str:
        path = str(target).removeprefix("bids::")
        return path.removeprefix(f"{subject}/")

    kept = [t for t in listed if in_subject(t) not in gone]
    if len(kept) == len(listed):
        return None
    if kept:  # (a single string target is either kept, returned above, or gone)
        meta["IntendedFor"] = kept
    else:
        del meta["IntendedFor"]
    return json.dumps(meta, indent=4) + "\n"
