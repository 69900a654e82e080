"""Discovery on object storage (no Dagster): the identified tree listed, the ledger of what was
de-identified (identified side only) read and written, and the discovery report. Decisions are
made by the pure :mod:`~aind_assets.hbcd.deid.discovery`."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aind_assets.hbcd.deid.batches import attempted_and_failed
from aind_assets.hbcd.deid.commit import sessions_being_written
from aind_assets.hbcd.deid.discovery import (
    Discovery,
    Ledger,
    SourceObject,
    digest_files,
    discover,
    ledger_name,
    parse_ledger_names,
)
from aind_assets.hbcd.deid.refused import (
    Refusal,
    refusals,
)
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.storage import (
    list_children,
    map_concurrently,
    relpath_of,
)
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url


def list_identified_bids(store: ObjectStoreResource, layout: HbcdLayout) -> list[SourceObject]:
    """The identified ``assembly_bids`` listing: top-level entries, then every folder listed
    concurrently (one request stream per subject)."""
    root = layout.identified_bids
    files, dirs = list_children(store, root)
    out = [SourceObject(relpath_of(i, root), i.size, i.etag) for i in files]
    for infos in store.list_many(dirs, folder=True).values():
        out.extend(SourceObject(relpath_of(i, root), i.size, i.etag) for i in infos)
    return out


def read_ledger(store: ObjectStoreResource, layout: HbcdLayout) -> Ledger:
    root = layout.ledger_root
    infos = store.list_objects(root, folder=True)
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

    def put() -> None:
        store.put_bytes(url, json.dumps(body, indent=1).encode())

    def older() -> list[str]:
        return [
            i.url
            for i in store.list_objects(join_url(layout.ledger_root, unit), folder=True)
            if i.url != url
        ]

    _, old = map_concurrently(store, lambda f: f(), [put, older])
    if old:  # only once the new entry is written
        store.delete(old)


def forget_ledger_entry(store: ObjectStoreResource, layout: HbcdLayout, unit: str) -> None:
    """Mark a unit as not done (e.g. its leak check failed), so the daily schedule redoes it."""
    entries = store.list_objects(join_url(layout.ledger_root, unit), folder=True)
    store.delete([i.url for i in entries])


@dataclass
class DiscoveryResult:
    discovery: Discovery
    ledger: Ledger
    #: every identified object that is not de-identified, with its type and reason
    refused: list[Refusal] = field(default_factory=list)
    #: sessions whose last attempt did not complete (requested alone, not in a batch)
    retry_alone: set[str] = field(default_factory=set)


def discover_sessions(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap
) -> DiscoveryResult:
    """Scan the identified side and read the ledger (concurrently); a session whose write did
    not complete (:mod:`~aind_assets.hbcd.deid.commit`) counts as not done, and one whose own
    part of it failed is to be retried alone (:mod:`~aind_assets.hbcd.deid.batches`)."""
    objects, ledger, writing = map_concurrently(
        store,
        lambda f: f(),
        [
            lambda: list_identified_bids(store, layout),
            lambda: read_ledger(store, layout),
            lambda: sessions_being_written(store, layout.deidentified_root),
        ],
    )
    discovery = discover(objects, idmap)
    digests = {k: s.digest for k, s in discovery.sessions.items()}
    failed = attempted_and_failed(writing, ledger.entries, digests)
    ledger.entries = {u: e for u, e in ledger.entries.items() if u not in writing}
    return DiscoveryResult(
        discovery, ledger, refusals((o.rel for o in objects), idmap), retry_alone=failed
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
