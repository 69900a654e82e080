"""De-identification on object storage: syncing sessions and the dataset-level files (no Dagster;
usable from Dagster, the CLI and the benchmark). Listing and the ledger are in
:mod:`~aind_assets.hbcd.deid.ledger`, the leak scan in :mod:`~aind_assets.hbcd.deid.scanning`. Decisions are
made by the pure modules :mod:`~aind_assets.hbcd.deid.discovery` and
:mod:`~aind_assets.hbcd.deid.plan`; this module lists, streams, writes and deletes.

Privacy: errors raised from here are :class:`~aind_assets.hbcd.identity.scrub.HbcdError` whose
messages went through the scrubber.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aind_assets.hbcd.copies import (
    DestObject,
    Write,
)
from aind_assets.hbcd.deid.commit import begin_session_write
from aind_assets.hbcd.deid.discovery import (
    DATASET_UNIT,
    EMPTY_DIGEST,
    RULES_VERSION,
    SourceObject,
    dataset_digest,
    discover,
)
from aind_assets.hbcd.deid.files import write_one
from aind_assets.hbcd.deid.ledger import write_ledger_entry
from aind_assets.hbcd.deid.links import in_run, refused_links, top_level_links
from aind_assets.hbcd.deid.plan import (
    SessionPlan,
    dataset_scope,
    plan_session_sync,
    plan_sync,
)
from aind_assets.hbcd.deid.refused import (
    REASON_COLLISION,
    REASON_TYPE,
    REASON_UNMAPPED,
    Refusal,
    file_type,
)
from aind_assets.hbcd.deid.scanning import (
    read_scanned,
    record_scanned,
)
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import (
    UnmappedIdentifierError,
    deidentify_path,
)
from aind_assets.hbcd.identity.scrub import Scrubber, error_reason, scrubbed_errors
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.storage import (
    full_listing,
    list_children,
    map_concurrently,
    object_metadata,
    relpath_of,
)
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import ObjectInfo, join_url

# --- de-identification -------------------------------------------------------------------


@dataclass
class SyncResult:
    """What a session (or dataset-level) run did; every path is a de-identified one."""

    unit: str
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    collisions: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    #: how files were written: "server-side copy", "copied" (deflate stream kept),
    #: "recompressed", "rewritten" (other formats) -> count
    outcomes: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    digest: str = EMPTY_DIGEST
    source_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.collisions

    @property
    def refused(self) -> list[Refusal]:
        """Source files of the unit that were not de-identified (no identifier: de-identified
        paths or hashed tokens), with their type and reason."""
        out = [Refusal(p, file_type(p), REASON_TYPE) for p in self.unsupported]
        out += [Refusal(p, "(hidden)", REASON_UNMAPPED) for p in self.unmapped]
        out += [Refusal(p, file_type(p), REASON_COLLISION) for p in self.collisions]
        out += [Refusal(p, file_type(p), f"failed: {why}") for p, why in self.failed.items()]
        return out


def _existing_with_metadata(
    store: ObjectStoreResource,
    infos: list[ObjectInfo],
    prefix: str,
    wanted: set[str],
) -> list[DestObject]:
    """De-identified objects with their metadata (HEAD only those a source might match)."""

    def one(info: ObjectInfo) -> DestObject:
        rel = relpath_of(info, prefix)
        meta = object_metadata(store, info) if rel in wanted else {}
        return DestObject(rel, info.size, info.etag, info.last_modified, meta)

    return map_concurrently(store, one, infos)


def _execute_sync(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    plan: SessionPlan,
    sources: dict[str, SourceObject],
    result: SyncResult,
    verify_unchanged: bool,
) -> dict[str, str | None]:
    """Write, then delete what must go; returns the outputs' scan results (path -> ETag their
    clean scan is recorded under; ``None``: forget)."""
    src_root, dst_root = layout.identified_bids, layout.deidentified_bids
    scrub = Scrubber(idmap)
    notes: Counter[str] = Counter()

    ids = idmap.identifiers()

    def write(w: Write) -> tuple[Write, str | None, list[str], str, str | None]:
        file_notes: list[str] = []
        try:
            outcome, etag = write_one(
                store, idmap, ids, w, src_root, dst_root, sources, file_notes, verify_unchanged
            )
        except Exception as e:  # noqa: BLE001 - reported per file, scrubbed
            return w, error_reason(e, scrub), file_notes, "failed", None
        return w, None, file_notes, outcome, etag

    outcomes: Counter[str] = Counter()
    scanned: dict[str, str | None] = {}
    for w, error, file_notes, outcome, etag in map_concurrently(store, write, plan.write):
        if error is None:
            result.written.append(w.dst)
            result.bytes_read += sources[w.src].size
            notes.update(file_notes)
            outcomes[outcome] += 1
            scanned[w.dst] = etag
        else:
            result.failed[w.dst] = error
            scanned[w.dst] = None
    # stale copies of files that failed must not stay as if current; orphans go too
    doomed = sorted(set(plan.delete) | set(result.failed) | set(plan.collisions))
    if doomed:
        store.delete([join_url(dst_root, rel) for rel in doomed])
    result.deleted = sorted(set(plan.delete))
    result.unchanged = len(plan.unchanged)
    result.unsupported = plan.unsupported
    result.unmapped = plan.unmapped
    result.collisions = plan.collisions
    result.notes = dict(sorted(notes.items()))
    result.outcomes = dict(sorted(outcomes.items()))
    for rel in doomed:
        scanned[rel] = None
    return scanned


def deidentify_session(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    partition_key: str,
    *,
    verify_unchanged: bool = True,
) -> SyncResult:
    """Bring ``sub-<RC>/ses-<label>/`` and the subject-level files on the de-identified side in
    line with the identified source: write new and changed files, delete what the source no
    longer has, leave the rest. Writes the session's writing marker first (its leak check
    removes it: :mod:`~aind_assets.hbcd.deid.commit`) and the ledger entry last, and only if
    nothing failed. ``verify_unchanged``: how an unchanged ``.nii.gz`` is checked before its
    server-side copy (:mod:`~aind_assets.hbcd.deid.files`)."""
    with scrubbed_errors(idmap, f"de-identifying {partition_key}"):
        rc, ses, src_subject, dst_subject = layout.session_urls(partition_key, idmap)
        # the writing marker (see deid.commit) goes up with the listings: no output is written
        # before all three are done
        listings, scanned_before, _ = map_concurrently(
            store,
            lambda f: f(),
            [
                lambda: store.list_many([src_subject, dst_subject], folder=True),
                lambda: read_scanned(store, layout, idmap, partition_key),
                lambda: begin_session_write(store, layout.deidentified_root, partition_key),
            ],
        )
        src_root = layout.identified_bids
        all_sources = [
            SourceObject(relpath_of(i, src_root), i.size, i.etag) for i in listings[src_subject]
        ]
        found = discover(all_sources, idmap)
        session = found.sessions.get(partition_key)
        subject_digest = found.subject_digests.get(rc, EMPTY_DIGEST)
        sources = [
            s
            for s in all_sources
            if s.rel.split("/")[1] == f"ses-{ses}" or not s.rel.split("/")[1].startswith("ses-")
        ]
        scope_session_only = False
        if session is None:  # the session is gone from the source: remove its copy
            sources = [s for s in sources if not s.rel.split("/")[1].startswith("ses-")]
            if not found.sessions:
                # and the subject has no session left: its subject-level files now belong to
                # the dataset unit (sessionless subject); this run removes the session only
                sources = []
                scope_session_only = True
        src_by_rel = {s.rel: s for s in sources}
        wanted = set()
        for s in sources:
            with contextlib.suppress(UnmappedIdentifierError):
                wanted.add(deidentify_path(s.rel, idmap))
        dst_root = layout.deidentified_bids
        existing = _existing_with_metadata(store, listings[dst_subject], dst_root, wanted)
        if scope_session_only:
            plan = plan_sync(
                sources, existing, idmap, lambda rel: rel.startswith(f"sub-{rc}/ses-{ses}/")
            )
        else:
            plan = plan_session_sync(sources, existing, idmap, rc_id=rc, session=ses)
        result = SyncResult(partition_key, source_files=len(sources))
        refused = {
            url: reason
            for url, reason in store.refused_links(src_subject).items()
            if in_run(url[len(src_subject.rstrip("/")) + 1 :], ses)
        }
        result.failed.update(refused_links(refused, src_root, idmap))
        scanned = _execute_sync(store, layout, idmap, plan, src_by_rel, result, verify_unchanged)
        result.digest = session.digest if session is not None else EMPTY_DIGEST
        body = {
            "unit": partition_key,
            "rules_version": RULES_VERSION,
            "files": [
                {"Key": s.rel, "Size": s.size, "ETag": s.etag}
                for s in sorted(sources, key=lambda s: s.rel)
            ],
            "outputs": plan.expected,
            "written_at": datetime.now(UTC).isoformat(),
        }
        subject = subject_digest if session is not None else EMPTY_DIGEST
        _finish(store, layout, idmap, result, scanned, scanned_before, subject, body)
        return result


def _finish(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    result: SyncResult,
    scanned: dict[str, str | None],
    scanned_before: dict[str, str] | None,
    subject_digest: str,
    body: dict[str, Any],
) -> None:
    """After the outputs: the scan record and, if nothing failed, the ledger entry (together).
    The record only spares the leak check reads: failing to write it fails nothing."""

    def record() -> None:
        with contextlib.suppress(Exception):
            record_scanned(store, layout, idmap, result.unit, scanned, scanned_before)

    steps: list[Callable[[], None]] = [record] if scanned else []
    if result.ok:
        steps.append(
            lambda: write_ledger_entry(
                store, layout, result.unit, result.digest, subject_digest, body
            )
        )
    map_concurrently(store, lambda f: f(), steps)


def deidentify_dataset(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    *,
    verify_unchanged: bool = True,
) -> SyncResult:
    """The dataset-level files (``participants.tsv`` with rows of unmapped subjects dropped,
    ``participants.json``, ``dataset_description.json``, ``README``...) and the files of
    subjects without any session folder (sessionless BIDS)."""
    with scrubbed_errors(idmap, "de-identifying the dataset-level files"):
        src_root, dst_root = layout.identified_bids, layout.deidentified_bids
        src_infos, dst_infos = map_concurrently(
            store, lambda root: full_listing(store, root), [src_root, dst_root]
        )
        all_sources = [SourceObject(relpath_of(i, src_root), i.size, i.etag) for i in src_infos]
        dst_rels = [relpath_of(i, dst_root) for i in dst_infos]
        found = discover(all_sources, idmap)
        _, scope = dataset_scope([s.rel for s in all_sources], dst_rels, idmap)
        sources = list(found.dataset_files)
        for group in found.sessionless_files.values():
            sources.extend(group)
        wanted = set()
        for s in sources:
            with contextlib.suppress(UnmappedIdentifierError):
                wanted.add(deidentify_path(s.rel, idmap))
        dst_in_scope = [i for i, rel in zip(dst_infos, dst_rels, strict=True) if scope(rel)]
        existing = _existing_with_metadata(store, dst_in_scope, dst_root, wanted)
        plan = plan_sync(sources, existing, idmap, scope)
        result = SyncResult(DATASET_UNIT, source_files=len(sources))
        refused = top_level_links(src_root)
        for folder in list_children(store, src_root)[1]:
            if not folder.rsplit("/", 1)[-1].startswith("sub-"):
                refused.update(store.refused_links(folder))
        result.failed.update(refused_links(refused, src_root, idmap))
        by_rel = {s.rel: s for s in sources}
        scanned = _execute_sync(store, layout, idmap, plan, by_rel, result, verify_unchanged)
        result.digest = dataset_digest(found.dataset_files, found.sessionless_files)
        body = {"unit": DATASET_UNIT, "outputs": plan.expected}
        _finish(store, layout, idmap, result, scanned, None, EMPTY_DIGEST, body)
        return result
