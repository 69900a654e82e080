"""Files of the identified tree that are not de-identified, with their type and reason (pure).

Nothing under ``assembly_bids`` is dropped silently: every object is either de-identified or
listed here. A :class:`Refusal` holds no identifier: its path is the de-identified one, or a
hashed token (:func:`~aind_assets.hbcd.copies.hidden_path_token`) when the path names a subject
missing from the identity map.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from aind_assets.hbcd.copies import hidden_path_token
from aind_assets.hbcd.formats.dispatch import handler_for
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import (
    UnmappedIdentifierError,
    deidentifier,
    deidentify_path,
)

__all__ = [
    "REASON_COLLISION",
    "REASON_TYPE",
    "REASON_UNMAPPED",
    "Refusal",
    "file_type",
    "refusals",
]

_DIGITS = re.compile(r"[0-9]{3,}")
REASON_TYPE = "file type not in the de-identification allow-list"
REASON_UNMAPPED = "names a subject missing from the identity map"
REASON_COLLISION = "two source files map to this de-identified name"


@dataclass(frozen=True)
class Refusal:
    path: str  # de-identified path, or "<path hash>"
    type: str  # the file's extension(s), e.g. ".pdf", ".tar.gz", "(none)"
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "type": self.type, "reason": self.reason}


def file_type(relpath: str, idmap: IdentityMap | None = None) -> str:
    """The extension(s) of a file name (lower case; at most two: ``.nii.gz``), or ``(none)``.
    An extension could in principle hold an identifier: one longer than 8 characters, with a
    run of 3+ digits, or that the identity map would rewrite, is shown as ``(hidden)``."""
    name = relpath.rsplit("/", 1)[-1].lower()
    parts = name.split(".")[1:]
    if not parts:
        return "(none)"
    ext = "." + ".".join(parts[-2:]) if len(parts) >= 2 and parts[-1] == "gz" else "." + parts[-1]
    if len(ext) > 9 or _DIGITS.search(ext):
        return "(hidden)"
    if idmap is not None and deidentifier(idmap).text(ext) != ext:
        return "(hidden)"
    return ext


def refusals(relpaths: Iterable[str], idmap: IdentityMap) -> list[Refusal]:
    """Which of ``relpaths`` (identified, relative to ``assembly_bids``) cannot be
    de-identified, and why (type not allowed, subject unmapped, name collision)."""
    out: list[Refusal] = []
    seen: dict[str, str] = {}
    for rel in sorted(relpaths):
        try:
            new = deidentify_path(rel, idmap)
        except UnmappedIdentifierError:
            out.append(Refusal(hidden_path_token(rel), file_type(rel, idmap), REASON_UNMAPPED))
            continue
        if handler_for(rel) is None:
            out.append(Refusal(new, file_type(rel, idmap), REASON_TYPE))
            continue
        if new in seen:
            out.append(Refusal(new, file_type(rel, idmap), REASON_COLLISION))
            continue
        seen[new] = rel
    return out
