"""Incremental sync plans (pure; no Dagster, no I/O).

* :func:`plan_session_sync`: identified session (+ subject-level files) -> de-identified copy.
  Each de-identified object carries user metadata ``source-etag`` (the source object's ETag or
  version token) and ``deid-rules`` (:data:`~aind_assets.hbcd.deid.discovery.RULES_VERSION`); an
  object whose metadata matches its source is left alone, others are (re)written, and objects
  in the session's scope that no source file produces any more are deleted.
* :func:`plan_reidentify`: de-identified ``derivatives`` -> identified copy. Each copy carries
  ``source-last-modified`` and ``source-etag`` of its de-identified source; orphans are deleted,
  sources that are newer (changed) are replaced, new ones copied. A ledger (kept on the
  identified side) lets unchanged objects be recognised from listings alone; without a ledger
  entry the object's metadata is checked.

Paths in plans are relative: identified-side paths only ever appear in ``src`` of a session plan
(identified side) and ``dst`` of a re-identification plan; what is reported to Dagster are the
de-identified paths.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from aind_assets.hbcd.deid.discovery import RULES_VERSION, SourceObject
from aind_assets.hbcd.formats.dispatch import handler_for
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import (
    UnmappedIdentifierError,
    deidentify_path,
    reidentify_path,
    subject_labels,
)

__all__ = [
    "META_DEID_RULES",
    "META_SOURCE_ETAG",
    "META_SOURCE_LAST_MODIFIED",
    "REIDENTIFY_CONTENT_EXTENSIONS",
    "DestObject",
    "ReidentifyPlan",
    "SessionPlan",
    "Write",
    "hidden_path_token",
    "in_dataset_scope",
    "in_session_scope",
    "plan_sync",
    "plan_reidentify",
    "plan_session_sync",
    "reidentify_content",
]

META_SOURCE_ETAG = "source-etag"
META_DEID_RULES = "deid-rules"
META_SOURCE_LAST_MODIFIED = "source-last-modified"

#: Re-identification rewrites the contents of these types only; others are copied as they are.
REIDENTIFY_CONTENT_EXTENSIONS = (".csv", ".html", ".json", ".txt", ".toml", ".tsv", ".log")


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


def in_session_scope(rel: str, rc_id: str, session: str) -> bool:
    """De-identified ``rel`` (under ``assembly_bids``) belongs to the session run of
    ``sub-<rc>_ses-<session>``: the session folder, or the subject's files outside any session
    folder."""
    sub = f"sub-{rc_id}/"
    if not rel.startswith(sub):
        return False
    rest = rel[len(sub) :]
    if rest.startswith(f"ses-{session}/"):
        return True
    first = rest.split("/", 1)[0]
    return not first.startswith("ses-")


@dataclass
class SessionPlan:
    write: list[Write] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # de-identified paths (not copied)
    #: source paths naming another subject missing from the map (shown as hidden tokens)
    unmapped: list[str] = field(default_factory=list)
    collisions: list[str] = field(default_factory=list)

    @property
    def expected(self) -> list[str]:
        return sorted([w.dst for w in self.write] + self.unchanged)


def in_dataset_scope(rel: str) -> bool:
    """De-identified ``rel`` (under ``assembly_bids``) is a dataset-level file (not under a
    ``sub-*`` folder)."""
    return not rel.split("/", 1)[0].startswith("sub-") or "/" not in rel


def plan_sync(
    sources: Iterable[SourceObject],
    existing: Iterable[DestObject],
    idmap: IdentityMap,
    scope: Callable[[str], bool],
    *,
    rules_version: str = RULES_VERSION,
) -> SessionPlan:
    """Plan a de-identified copy: ``sources`` are identified paths relative to
    ``assembly_bids``; ``existing`` are de-identified objects (with their metadata). Only
    de-identified paths for which ``scope`` is true are written or deleted."""
    plan = SessionPlan()
    by_dst: dict[str, DestObject] = {d.rel: d for d in existing if scope(d.rel)}
    produced: set[str] = set()
    for src in sorted(sources, key=lambda s: s.rel):
        try:
            dst = deidentify_path(src.rel, idmap)
        except UnmappedIdentifierError:
            plan.unmapped.append(hidden_path_token(src.rel))
            continue
        if not scope(dst):
            # a source path whose de-identified form leaves the run's scope (e.g. it names
            # another subject): refuse rather than write outside it
            plan.unmapped.append(hidden_path_token(src.rel))
            continue
        if handler_for(src.rel) is None:
            plan.unsupported.append(dst)
            continue
        if dst in produced:
            plan.collisions.append(dst)
            continue
        produced.add(dst)
        old = by_dst.get(dst)
        if (
            old is not None
            and src.etag is not None
            and old.metadata.get(META_SOURCE_ETAG) == src.etag
            and old.metadata.get(META_DEID_RULES) == rules_version
        ):
            plan.unchanged.append(dst)
        else:
            plan.write.append(Write(src.rel, dst, src.etag, "new" if old is None else "changed"))
    if plan.collisions:
        # every file that collides is left out, including the first one
        collided = set(plan.collisions)
        plan.write = [w for w in plan.write if w.dst not in collided]
        plan.unchanged = [u for u in plan.unchanged if u not in collided]
        produced -= collided
    plan.delete = sorted(rel for rel in by_dst if rel not in produced)
    return plan


def plan_session_sync(
    sources: Iterable[SourceObject],
    existing: Iterable[DestObject],
    idmap: IdentityMap,
    *,
    rc_id: str,
    session: str,
    rules_version: str = RULES_VERSION,
) -> SessionPlan:
    """:func:`plan_sync` for one session and its subject-level files (``existing``: the
    de-identified objects under ``sub-<rc>/``; other sessions of the subject are never
    touched)."""
    return plan_sync(
        sources,
        existing,
        idmap,
        lambda rel: in_session_scope(rel, rc_id, session),
        rules_version=rules_version,
    )


# --- re-identification -------------------------------------------------------------------


def reidentify_content(relpath: str) -> bool:
    """Whether re-identification rewrites this file's content (else: byte copy)."""
    name = relpath.rsplit("/", 1)[-1].lower()
    return name.endswith(REIDENTIFY_CONTENT_EXTENSIONS)


@dataclass(frozen=True)
class ReidLedgerEntry:
    src_etag: str | None
    src_last_modified: str  # ISO
    dst_etag: str | None


@dataclass
class ReidentifyPlan:
    copy: list[Write] = field(default_factory=list)  # reason "new" or "newer"
    delete: list[str] = field(default_factory=list)  # identified rel paths (orphans)
    unchanged: list[str] = field(default_factory=list)  # de-identified rel paths
    #: (de-identified rel, identified rel): exists but no ledger entry: compare metadata
    verify: list[Write] = field(default_factory=list)
    #: de-identified paths naming a subject not in the map (not copied)
    unmapped: list[str] = field(default_factory=list)

    @property
    def orphans(self) -> int:
        return len(self.delete)


def iso(ts: datetime | None) -> str:
    return ts.isoformat() if ts is not None else ""


def plan_reidentify(
    deidentified: Iterable[DestObject],
    identified: Iterable[DestObject],
    idmap: IdentityMap,
    ledger: Mapping[str, ReidLedgerEntry] | None = None,
) -> ReidentifyPlan:
    """Plan the sync of de-identified derivatives (``deidentified``, relative to their
    ``derivatives`` folder) to the identified copy (``identified``, likewise)."""
    ledger = ledger or {}
    plan = ReidentifyPlan()
    have = {d.rel: d for d in identified}
    expected: set[str] = set()
    for src in sorted(deidentified, key=lambda d: d.rel):
        labels_ok = all(idmap.has_rc(lbl) for lbl in subject_labels(src.rel))
        if not labels_ok:
            plan.unmapped.append(src.rel)
            continue
        dst = reidentify_path(src.rel, idmap)
        expected.add(dst)
        old = have.get(dst)
        write = Write(src.rel, dst, src.etag, "new", src.last_modified)
        if old is None:
            plan.copy.append(write)
            continue
        entry = ledger.get(src.rel)
        if entry is None:
            plan.verify.append(write)
        elif (
            entry.src_etag == src.etag
            and entry.src_last_modified == iso(src.last_modified)
            and entry.dst_etag == old.etag
        ):
            plan.unchanged.append(src.rel)
        else:
            plan.copy.append(Write(src.rel, dst, src.etag, "newer", src.last_modified))
    plan.delete = sorted(rel for rel in have if rel not in expected)
    return plan


def verified_unchanged(write: Write, metadata: Mapping[str, str]) -> bool:
    """For a ``verify`` item: the existing copy's metadata names this very source version."""
    return metadata.get(META_SOURCE_LAST_MODIFIED) == iso(write.last_modified) and metadata.get(
        META_SOURCE_ETAG, ""
    ) == (write.etag or "")
