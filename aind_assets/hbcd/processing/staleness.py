"""Is a derivative still in sync with its de-identified session? (pure; no Dagster)

A derivative's input manifest (``derivatives/ses-<label>/cbrain_misc/sub-<RC>_<pipeline>_
ses-<label>.json``) lists the inputs it was made from. It is compared with the current listing
of the session folder ``assembly_bids/sub-<RC>/ses-<label>/`` by keys and sizes (and ETags when
both sides have them), ignoring ``*sessions.tsv`` / ``*sessions.json``.

Keys are normalised to start at ``assembly_bids/`` whatever the bucket or prefix they were
recorded under (CBRAIN records bucket keys). A file *added* to the session makes the derivative
stale only if it lies in a folder (``anat/``, ``func/``, the session folder itself...) that the
manifest already covers: a pipeline that used only ``anat/`` is not made stale by a new EEG
file, while our own pipeline, which records the whole session, is made stale by any new file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aind_assets.hbcd.layout import BIDS_FOLDER
from aind_assets.hbcd.manifests import DerivativeManifest, ManifestEntry, manifest_diff

__all__ = ["BIDS_FOLDER", "Staleness", "normalise_key", "session_prefix", "staleness"]


def session_prefix(rc_id: str, session: str) -> str:
    return f"{BIDS_FOLDER}/sub-{rc_id}/ses-{session}/"


def normalise_key(key: str) -> str:
    """``s3://bucket/some/prefix/assembly_bids/sub-X/...`` -> ``assembly_bids/sub-X/...``."""
    marker = BIDS_FOLDER + "/"
    if key.startswith(marker):
        return key
    i = key.find("/" + marker)
    return key[i + 1 :] if i >= 0 else key


@dataclass
class Staleness:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # size or ETag differs

    @property
    def stale(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
        }


def _folder(key: str, prefix: str) -> str:
    rest = key[len(prefix) :]
    return rest.rsplit("/", 1)[0] if "/" in rest else ""


def _normalised(entries: Iterable[Any]) -> list[ManifestEntry]:
    out = []
    for e in entries:
        entry = e if isinstance(e, ManifestEntry) else ManifestEntry.model_validate(e)
        out.append(entry.model_copy(update={"Key": normalise_key(entry.Key)}))
    return out


def staleness(
    manifest: DerivativeManifest, current: Iterable[Any], rc_id: str, session: str
) -> Staleness:
    """Compare a manifest with the current listing of the de-identified session (entries with
    ``Key`` relative to any root, ``Size``, optional ``ETag``)."""
    prefix = session_prefix(rc_id, session)
    recorded = _normalised(manifest.entries)
    diff = manifest_diff(recorded, _normalised(current), prefix=prefix)
    covered = {_folder(e.Key, prefix) for e in recorded if e.Key.startswith(prefix)}
    return Staleness(
        added=[k for k in diff.added if _folder(k, prefix) in covered],
        removed=diff.removed,
        changed=sorted(diff.resized + diff.etag_changed),
    )
