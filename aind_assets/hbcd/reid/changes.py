"""The LORIS change feed of a re-identification (pure; no Dagster).

After each re-identification LORIS removes entries for derivative outputs that no longer exist,
replaces those that have newer outputs, and adds new ones. :func:`build_change_manifest` turns
what the run did into that list, keyed as LORIS reads it: by DCCID (``CandID``), visit label and
pipeline, with the identified path of each output. It is written on the identified side only
(``HBCD_IDENTIFIED_ROOT/.aind-assets/reidentified/changes/<UTC timestamp>.json`` and
``latest.json``); Dagster sees its counts only.

Paths follow the layout ``derivatives/ses-<label>/<pipeline>/sub-<DCCID>/...``; an output whose
path names no subject (a pipeline's ``dataset_description.json``) has ``CandID`` ``null``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["CHANGE_KINDS", "ChangeEntry", "build_change_manifest", "change_entry"]

#: ``removed``: the output no longer exists; ``replaced``: a newer output replaced it;
#: ``added``: a new output.
CHANGE_KINDS = ("removed", "replaced", "added")
_PATH = re.compile(r"(?:ses-(?P<ses>[A-Za-z0-9]+)/(?P<pipeline>[^/]+)/)?(?P<rest>.*)\Z")
_SUB = re.compile(r"(?:^|/)sub-(?P<id>[A-Za-z0-9]+)(?:/|_|\Z)")
_SES = re.compile(r"(?:^|/)ses-(?P<ses>[A-Za-z0-9]+)(?:/|\Z)")


@dataclass(frozen=True)
class ChangeEntry:
    change: str
    path: str  # identified path relative to derivatives/
    cand_id: str | None
    visit_label: str | None
    pipeline: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "Change": self.change,
            "CandID": self.cand_id,
            "Visit_label": self.visit_label,
            "Pipeline": self.pipeline,
            "Path": f"derivatives/{self.path}",
        }


def change_entry(change: str, identified_rel: str) -> ChangeEntry:
    """One change, keyed from an identified path (relative to ``derivatives/``)."""
    if change not in CHANGE_KINDS:
        raise ValueError(f"unknown change kind {change!r}")
    m = _PATH.match(identified_rel)
    ses = m["ses"] if m else None
    pipeline = m["pipeline"] if m else None
    rest = m["rest"] if m else identified_rel
    sub = _SUB.search(rest)
    if ses is None and (inner := _SES.search(rest)):
        ses = inner["ses"]
    return ChangeEntry(change, identified_rel, sub["id"] if sub else None, ses, pipeline)


def build_change_manifest(
    removed: Iterable[str],
    replaced: Iterable[str],
    added: Iterable[str],
    *,
    written_at: str,
) -> dict[str, Any]:
    """The manifest LORIS reads (identified paths relative to ``derivatives/``)."""
    entries = [
        change_entry(kind, rel)
        for kind, rels in zip(CHANGE_KINDS, (removed, replaced, added), strict=True)
        for rel in sorted(rels)
    ]
    return {
        "written_at": written_at,
        "counts": {k: sum(1 for e in entries if e.change == k) for k in CHANGE_KINDS},
        "candidates": sorted({e.cand_id for e in entries if e.cand_id}),
        "changes": [e.as_dict() for e in entries],
    }
