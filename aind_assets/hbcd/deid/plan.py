"""Planning de-identification (pure): identified session (+ subject-level files) -> de-identified
copy. Each de-identified object carries user metadata ``source-etag`` (the source object's ETag or
version token) and ``deid-rules`` (:data:`~aind_assets.hbcd.deid.discovery.RULES_VERSION`); an
object whose metadata matches its source is left alone, others are (re)written, and objects in
the session's scope that no source file produces any more are deleted. Identified paths appear
only in ``src``; what is reported to Dagster are the de-identified paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aind_assets.hbcd.copies import (
    META_DEID_RULES,
    META_SOURCE_ETAG,
    DestObject,
    Write,
    hidden_path_token,
)
from aind_assets.hbcd.deid.discovery import RULES_VERSION, SourceObject, discover
from aind_assets.hbcd.formats.dispatch import handler_for
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import (
    UnmappedIdentifierError,
    deidentify_path,
)


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


def subjects_with_sessions(rels: list[str]) -> set[str]:
    """Subject labels (``sub-<label>``) having at least one ``ses-*`` folder."""
    out = set()
    for rel in rels:
        parts = rel.split("/")
        if len(parts) > 2 and parts[0].startswith("sub-") and parts[1].startswith("ses-"):
            out.add(parts[0])
    return out


def dataset_scope(
    src_rels: list[str], dst_rels: list[str], idmap: IdentityMap
) -> tuple[set[str], Callable[[str], bool]]:
    """The dataset unit's subjects (``sub-<RC>`` folders without any session, on the source
    side or on the de-identified side and not sessioned in the source) and its scope: those
    folders and everything not under ``sub-*``."""
    found = discover([SourceObject(r, 0, None) for r in src_rels], idmap)
    subjects = {f"sub-{rc}" for rc in found.sessionless_files}
    sessioned = {f"sub-{k.split('_ses-')[0][4:]}" for k in found.sessions}
    dst_sessioned = subjects_with_sessions(dst_rels)
    for rel in dst_rels:
        first = rel.split("/", 1)[0]
        if (
            "/" in rel
            and first.startswith("sub-")
            and first not in dst_sessioned
            and first not in sessioned
            and idmap.has_rc(first[4:])
        ):
            subjects.add(first)

    def scope(rel: str) -> bool:
        return in_dataset_scope(rel) or rel.split("/", 1)[0] in subjects

    return subjects, scope


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
