"""What a copied object records about its source, shared by de-identification and
re-identification (pure): the user-metadata keys, the plan items, and the check that an existing
copy names the very source version it would be made from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

META_SOURCE_ETAG = "source-etag"
META_DEID_RULES = "deid-rules"
META_SOURCE_LAST_MODIFIED = "source-last-modified"
#: On a de-identified ``.nii.gz``: ``unchanged`` = written by the NIfTI-gz path, so everything
#: after its NIfTI prefix (header + extensions) is the source's voxel data, in members with
#: minimal headers; the leak scan reads only the prefix of such an object.
META_VOXELS = "deid-voxels"
VOXELS_UNCHANGED = "unchanged"


def hidden_path_token(relpath: str) -> str:
    """A stable, identifier-free stand-in for a path that cannot be shown."""
    return "<path " + hashlib.sha256(relpath.encode()).hexdigest()[:12] + ">"


@dataclass(frozen=True)
class DestObject:
    """An existing object (``rel`` relative to the side's root folder)."""

    rel: str
    size: int
    etag: str | None
    last_modified: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Write:
    src: str  # source relative path
    dst: str  # destination relative path
    etag: str | None  # source ETag (recorded as metadata)
    reason: str  # "new" or "changed" (session) / "new" or "newer" (re-identification)
    last_modified: datetime | None = None

    def __repr__(self) -> str:
        return f"Write(dst={self.dst!r}, reason={self.reason})"


def iso(ts: datetime | None) -> str:
    return ts.isoformat() if ts is not None else ""


def verified_unchanged(write: Write, metadata: Mapping[str, str]) -> bool:
    """For a ``verify`` item: the existing copy's metadata names this very source version."""
    return metadata.get(META_SOURCE_LAST_MODIFIED) == iso(write.last_modified) and metadata.get(
        META_SOURCE_ETAG, ""
    ) == (write.etag or "")
