"""De-identification on object storage: listing the identified tree, the ledger of what was
de-identified, syncing sessions and the dataset-level files, and the leak scan of the
de-identified side (no Dagster; usable from Dagster, the CLI and the benchmark). Decisions are
made by the pure modules :mod:`~aind_assets.hbcd.deid.discovery` and
:mod:`~aind_assets.hbcd.deid.plan`; this module lists, streams, writes and deletes.

Privacy: errors raised from here are :class:`~aind_assets.hbcd.identity.scrub.HbcdError` whose
messages went through the scrubber.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aind_assets.hbcd.copies import (
    META_DEID_RULES,
    META_SOURCE_ETAG,
    DestObject,
    Write,
)
from aind_assets.hbcd.deid.commit import begin_session_write, sessions_being_written
from aind_assets.hbcd.deid.discovery import (
    DATASET_UNIT,
    EMPTY_DIGEST,
    RULES_VERSION,
    Discovery,
    Ledger,
    SourceObject,
    dataset_digest,
    digest_files,
    discover,
    ledger_name,
    parse_ledger_names,
)
from aind_assets.hbcd.deid.links import in_run, refused_links, top_level_links
from aind_assets.hbcd.deid.plan import (
    SessionPlan,
    dataset_scope,
    in_dataset_scope,
    in_session_scope,
    plan_session_sync,
    plan_sync,
    subjects_with_sessions,
)
from aind_assets.hbcd.deid.refused import (
    REASON_COLLISION,
    REASON_TYPE,
    REASON_UNMAPPED,
    Refusal,
    file_type,
    refusals,
)
from aind_assets.hbcd.formats.dispatch import (
    deidentify_file,
)
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import (
    UnmappedIdentifierError,
    deidentify_path,
    parse_session_partition_key,
)
from aind_assets.hbcd.identity.scrub import Scrubber, error_reason, scrubbed_errors
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.leaks.scan import Finding, redact, scan_for_identifiers
from aind_assets.hbcd.storage import list_children, map_concurrently, object_metadata, relpath_of
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import ObjectInfo, join_url

# --- discovery ---------------------------------------------------------------------------


def list_identified_bids(store: ObjectStoreResource, layout: HbcdLayout) -> list[SourceObject]:
    """The identified ``assembly_bids`` listing: top-level entries, then every folder listed
    concurrently (one request stream per subject)."""
    root = layout.identified_bids
    files, dirs = list_children(store, root)
    out = [SourceObject(relpath_of(i, root), i.size, i.etag) for i in files]
    for infos in store.list_many(dirs).values():
        out.extend(SourceObject(relpath_of(i, root), i.size, i.etag) for i in infos)
    return out


def read_ledger(store: ObjectStoreResource, layout: HbcdLayout) -> Ledger:
    root = layout.ledger_root
    infos = store.list_objects(root)
    return parse_ledger_names((relpath_of(i, root), i.last_modified.timestamp()) for i in infos)


def write_ledger_entry(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    unit: str,
    session_digest: str,
    subject_digest: str,
    body: dict[str, Any],
) -> None:
    """Record a unit as done (after all its outputs), then drop its older entries."""
    name = ledger_name(unit, session_digest, subject_digest)
    url = join_url(layout.ledger_root, name)
    store.put_bytes(url, json.dumps(body, indent=1).encode())
    old = [i.url for i in store.list_objects(join_url(layout.ledger_root, unit)) if i.url != url]
    if old:
        store.delete(old)


def forget_ledger_entry(store: ObjectStoreResource, layout: HbcdLayout, unit: str) -> None:
    """Mark a unit as not done (e.g. its leak check failed), so the daily schedule redoes it."""
    store.delete([i.url for i in store.list_objects(join_url(layout.ledger_root, unit))])


@dataclass
class DiscoveryResult:
    discovery: Discovery
    ledger: Ledger
    #: every identified object that is not de-identified, with its type and reason
    refused: list[Refusal] = field(default_factory=list)


def discover_sessions(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap
) -> DiscoveryResult:
    """Scan the identified side and read the ledger (concurrently); a session whose write did
    not complete (:mod:`~aind_assets.hbcd.deid.commit`) counts as not done."""
    objects, ledger, writing = map_concurrently(
        store,
        lambda f: f(),
        [
            lambda: list_identified_bids(store, layout),
            lambda: read_ledger(store, layout),
            lambda: sessions_being_written(store, layout.deidentified_root),
        ],
    )
    ledger.entries = {u: e for u, e in ledger.entries.items() if u not in writing}
    return DiscoveryResult(
        discover(objects, idmap), ledger, refusals((o.rel for o in objects), idmap)
    )


def write_discovery_report(
    store: ObjectStoreResource, layout: HbcdLayout, result: DiscoveryResult
) -> bool:
    """Write the identified-side report (sessions found, unmapped subject folders by name, for
    the operators who maintain the map) when it changed. Returns whether it was written."""
    d = result.discovery
    refused = [r.as_dict() for r in result.refused]
    body = {
        "sessions": len(d.sessions),
        "subjects": len(d.subject_digests),
        "sessionless_subjects": len(d.sessionless_files),
        "dataset_files": len(d.dataset_files),
        "unmapped_subject_folders": d.unmapped_subject_folders,
        "refused_files": refused,
        "refused_by_type": dict(sorted(Counter(r["type"] for r in refused).items())),
        "digest": digest_files(
            [SourceObject(k, 0, s.digest) for k, s in d.sessions.items()],
            d.dataset_digest + ",".join(d.unmapped_subject_folders) + json.dumps(refused),
        ),
    }
    url = layout.discovery_report
    with contextlib.suppress(FileNotFoundError, ValueError):
        if json.loads(store.get_bytes(url)).get("digest") == body["digest"]:
            return False
    body["written_at"] = datetime.now(UTC).isoformat()
    store.put_bytes(url, json.dumps(body, indent=1).encode())
    return True


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
) -> None:
    src_root, dst_root = layout.identified_bids, layout.deidentified_bids
    scrub = Scrubber(idmap)
    notes: Counter[str] = Counter()

    def write(w: Write) -> tuple[Write, str | None, list[str]]:
        src_url, dst_url = join_url(src_root, w.src), join_url(dst_root, w.dst)
        meta = {META_SOURCE_ETAG: w.etag or "", META_DEID_RULES: RULES_VERSION}
        file_notes: list[str] = []
        try:
            with (
                store.open(src_url, "rb") as src,
                store.open(dst_url, "wb", meta) as dst,
            ):
                deidentify_file(w.src, src, dst, idmap, notes=file_notes)
        except Exception as e:  # noqa: BLE001 - reported per file, scrubbed
            return w, error_reason(e, scrub), file_notes
        return w, None, file_notes

    for w, error, file_notes in map_concurrently(store, write, plan.write):
        if error is None:
            result.written.append(w.dst)
            result.bytes_read += sources[w.src].size
            notes.update(file_notes)
        else:
            result.failed[w.dst] = error
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


def deidentify_session(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap, partition_key: str
) -> SyncResult:
    """Bring ``sub-<RC>/ses-<label>/`` and the subject-level files on the de-identified side in
    line with the identified source: write new and changed files, delete what the source no
    longer has, leave the rest. Writes the session's writing marker first (its leak check
    removes it: :mod:`~aind_assets.hbcd.deid.commit`) and the ledger entry last, and only if
    nothing failed."""
    with scrubbed_errors(idmap, f"de-identifying {partition_key}"):
        rc, ses, src_subject, dst_subject = layout.session_urls(partition_key, idmap)
        listings = store.list_many([src_subject, dst_subject])
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
        begin_session_write(store, layout.deidentified_root, partition_key)  # see deid.commit
        _execute_sync(store, layout, idmap, plan, src_by_rel, result)
        result.digest = session.digest if session is not None else EMPTY_DIGEST
        if result.ok:
            write_ledger_entry(
                store,
                layout,
                partition_key,
                result.digest,
                subject_digest if session is not None else EMPTY_DIGEST,
                {
                    "unit": partition_key,
                    "rules_version": RULES_VERSION,
                    "files": [
                        {"Key": s.rel, "Size": s.size, "ETag": s.etag}
                        for s in sorted(sources, key=lambda s: s.rel)
                    ],
                    "outputs": plan.expected,
                    "written_at": datetime.now(UTC).isoformat(),
                },
            )
        return result


def _full_listing(store: ObjectStoreResource, root: str) -> list[ObjectInfo]:
    files, dirs = list_children(store, root)
    for infos in store.list_many(dirs).values():
        files.extend(infos)
    return files


def deidentify_dataset(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap
) -> SyncResult:
    """The dataset-level files (``participants.tsv`` with rows of unmapped subjects dropped,
    ``participants.json``, ``dataset_description.json``, ``README``...) and the files of
    subjects without any session folder (sessionless BIDS)."""
    with scrubbed_errors(idmap, "de-identifying the dataset-level files"):
        src_root, dst_root = layout.identified_bids, layout.deidentified_bids
        src_infos, dst_infos = map_concurrently(
            store, lambda root: _full_listing(store, root), [src_root, dst_root]
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
        _execute_sync(store, layout, idmap, plan, {s.rel: s for s in sources}, result)
        result.digest = dataset_digest(found.dataset_files, found.sessionless_files)
        if result.ok:
            write_ledger_entry(
                store,
                layout,
                DATASET_UNIT,
                result.digest,
                EMPTY_DIGEST,
                {"unit": DATASET_UNIT, "outputs": plan.expected},
            )
        return result


# --- leak scanning -----------------------------------------------------------------------


@dataclass
class ScanResult:
    scanned: int = 0
    bytes_scanned: int = 0
    findings: list[Finding] = field(default_factory=list)
    leaking: list[str] = field(default_factory=list)  # URLs of objects with findings

    @property
    def clean(self) -> bool:
        return not self.findings

    def by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.findings).items()))


def scan_objects(
    store: ObjectStoreResource, infos: list[ObjectInfo], root: str, idmap: IdentityMap
) -> ScanResult:
    """Scan names and contents (gzip and NIfTI headers included) of objects, concurrently."""
    ids = idmap.identifiers()

    def one(info: ObjectInfo) -> list[Finding]:
        rel = relpath_of(info, root)
        try:
            with store.open(info.url, "rb") as f:
                return scan_for_identifiers(rel, f, ids)
        except Exception as e:  # noqa: BLE001 - an object that cannot be read cannot be cleared
            return [
                Finding(
                    redact(rel, ids), f"unreadable ({type(e).__name__})", None, None, "unscannable"
                )
            ]

    result = ScanResult()
    for info, findings in zip(infos, map_concurrently(store, one, infos), strict=True):
        result.scanned += 1
        result.bytes_scanned += info.size
        if findings:
            result.findings.extend(findings)
            result.leaking.append(info.url)
    return result


def scan_session(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap, partition_key: str
) -> ScanResult:
    """Every object of the de-identified session and its subject-level files."""
    with scrubbed_errors(idmap, f"scanning {partition_key}"):
        rc, ses = parse_session_partition_key(partition_key)
        root = layout.deidentified_bids
        infos = [
            i
            for i in store.list_objects(join_url(root, f"sub-{rc}"))
            if in_session_scope(relpath_of(i, root), rc, ses)
        ]
        return scan_objects(store, infos, root, idmap)


def scan_dataset(store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap) -> ScanResult:
    """The dataset-level files and every subject folder without a session folder."""
    with scrubbed_errors(idmap, "scanning the dataset-level files"):
        root = layout.deidentified_bids
        infos = _full_listing(store, root)
        rels = [relpath_of(i, root) for i in infos]
        sessioned = subjects_with_sessions(rels)
        files = [
            i
            for i, rel in zip(infos, rels, strict=True)
            if in_dataset_scope(rel) or rel.split("/", 1)[0] not in sessioned
        ]
        return scan_objects(store, files, root, idmap)
