"""Derivative input manifests and staleness (pure).

When processing is launched, CBRAIN records which de-identified inputs it used:
``derivatives/ses-<label>/cbrain_misc/sub-<RC>_<pipeline>_ses-<label>.json``, a JSON list of
``{"Key", "Size", "LastModified"}`` (the shape of S3 ``ListObjectsV2`` ``Contents``; extra keys
such as ``ETag`` are kept). A derivative is *stale* when the current listing of its inputs
differs from the manifest in keys or sizes. ``*sessions.tsv`` / ``*sessions.json`` are ignored:
they change whenever any session of the subject is added. ``LastModified`` is not compared (a
re-copy changes it without changing content); ``ETag`` is compared only when both sides have it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "DEFAULT_IGNORED_SUFFIXES",
    "DerivativeManifest",
    "ManifestDiff",
    "ManifestEntry",
    "ManifestName",
    "manifest_diff",
    "manifest_is_stale",
    "manifest_relpath",
    "parse_manifest_relpath",
]

DEFAULT_IGNORED_SUFFIXES: tuple[str, ...] = ("sessions.tsv", "sessions.json")
_NAME = re.compile(
    r"(?:ses-(?P<dir>[A-Za-z0-9]+)/)?cbrain_misc/sub-(?P<rc>[A-Za-z0-9]+)_(?P<pipeline>.+)"
    r"_ses-(?P<ses>[A-Za-z0-9]+)\.json\Z"
)


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    Key: str
    Size: int
    LastModified: datetime | None = None
    ETag: str | None = None


class DerivativeManifest(BaseModel):
    entries: list[ManifestEntry]

    @classmethod
    def parse(cls, text: str | bytes) -> DerivativeManifest:
        """Accepts a JSON list of entries, or an object with ``Contents``/``entries``/``files``."""
        data = json.loads(text)
        if isinstance(data, dict):
            for key in ("Contents", "entries", "files"):
                if isinstance(data.get(key), list):
                    data = data[key]
                    break
            else:
                raise ValueError("manifest JSON object has no Contents/entries/files list")
        if not isinstance(data, list):
            raise ValueError("manifest must be a JSON list of {Key, Size, LastModified}")
        return cls(entries=[ManifestEntry.model_validate(e) for e in data])

    @classmethod
    def from_listing(cls, listing: Iterable[Any]) -> DerivativeManifest:
        return cls(entries=[_entry(e) for e in listing])

    def to_json(self) -> str:
        return json.dumps(
            [e.model_dump(mode="json", exclude_none=True) for e in self.entries], indent=2
        )


@dataclass(frozen=True)
class ManifestName:
    rc_id: str
    pipeline: str
    session: str


def manifest_relpath(rc_id: str, pipeline: str, session_label: str) -> str:
    """Manifest path relative to the derivatives root."""
    ses = session_label.removeprefix("ses-")
    rc = rc_id.removeprefix("sub-")
    return f"ses-{ses}/cbrain_misc/sub-{rc}_{pipeline}_ses-{ses}.json"


def parse_manifest_relpath(relpath: str) -> ManifestName:
    m = _NAME.search(relpath)
    if not m:
        raise ValueError("not a cbrain_misc manifest path")
    return ManifestName(m["rc"], m["pipeline"], m["ses"])


def _entry(e: Any) -> ManifestEntry:
    if isinstance(e, ManifestEntry):
        return e
    if isinstance(e, Mapping):
        key = e.get("Key", e.get("key", e.get("name")))
        size = e.get("Size", e.get("size"))
        extra = {k: v for k, v in e.items() if k not in ("Key", "key", "name", "Size", "size")}
        if "LastModified" not in extra and "last_modified" in extra:
            extra["LastModified"] = extra.pop("last_modified")
        return ManifestEntry.model_validate({"Key": key, "Size": size, **extra})
    raise TypeError("listing entries must be ManifestEntry or mappings with Key/Size")


def _norm(key: str, root: str) -> str:
    if key.startswith("s3://"):
        key = key[5:]
    key = key.lstrip("/")
    root = root.removeprefix("s3://").strip("/")
    if root and key.startswith(root + "/"):
        key = key[len(root) + 1 :]
    return key


@dataclass
class ManifestDiff:
    added: list[str] = field(default_factory=list)  # in the listing, not in the manifest
    removed: list[str] = field(default_factory=list)  # in the manifest, no longer listed
    resized: list[str] = field(default_factory=list)
    etag_changed: list[str] = field(default_factory=list)

    @property
    def stale(self) -> bool:
        return bool(self.added or self.removed or self.resized or self.etag_changed)


def manifest_diff(
    manifest: DerivativeManifest | Iterable[Any],
    current_listing: Iterable[Any],
    *,
    root: str = "",
    prefix: str | None = None,
    ignored_suffixes: tuple[str, ...] = DEFAULT_IGNORED_SUFFIXES,
) -> ManifestDiff:
    """Compare a manifest with the current listing of its inputs. Keys are compared after
    stripping ``s3://`` and ``root``; with ``prefix`` only keys under it are compared (use the
    session folder when the listing covers more)."""
    entries = manifest.entries if isinstance(manifest, DerivativeManifest) else manifest

    def index(items: Iterable[Any]) -> dict[str, ManifestEntry]:
        out = {}
        for item in items:
            e = _entry(item)
            key = _norm(e.Key, root)
            if key.rsplit("/", 1)[-1].endswith(ignored_suffixes) or key.endswith("/"):
                continue
            if prefix is not None and not key.startswith(prefix):
                continue
            out[key] = e
        return out

    old, new = index(entries), index(current_listing)
    diff = ManifestDiff(
        added=sorted(new.keys() - old.keys()), removed=sorted(old.keys() - new.keys())
    )
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        if a.Size != b.Size:
            diff.resized.append(key)
        elif a.ETag and b.ETag and a.ETag.strip('"') != b.ETag.strip('"'):
            diff.etag_changed.append(key)
    return diff


def manifest_is_stale(
    manifest: DerivativeManifest | Iterable[Any], current_listing: Iterable[Any], **kwargs: Any
) -> bool:
    """True when inputs were added, removed or changed size since the manifest was written
    (see :func:`manifest_diff` for options)."""
    return manifest_diff(manifest, current_listing, **kwargs).stale
