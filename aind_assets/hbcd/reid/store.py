"""Re-identification on object storage: derivatives copied back to the identified side with
release-candidate IDs replaced by DCCIDs; only what changed is copied (no Dagster).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aind_assets.hbcd.copies import (
    META_SOURCE_ETAG,
    META_SOURCE_LAST_MODIFIED,
    DestObject,
    Write,
    iso,
    verified_unchanged,
)
from aind_assets.hbcd.formats.dispatch import (
    reidentify_bytes,
    reidentify_file,
)
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.scrub import Scrubber, error_reason, scrubbed_errors
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.reid.feed import write_change_feed
from aind_assets.hbcd.reid.plan import ReidLedgerEntry, plan_reidentify, reidentify_content
from aind_assets.hbcd.storage import (
    S3_SERVER_COPY_LIMIT,
    STREAM_BLOCK,
    etag_of,
    map_concurrently,
    object_metadata,
    put_small,
    relpath_of,
    server_copy,
)
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import ObjectInfo, is_s3, join_url

# --- re-identification -------------------------------------------------------------------


@dataclass
class ReidentifyResult:
    new: list[str] = field(default_factory=list)  # de-identified rel paths
    newer: list[str] = field(default_factory=list)
    orphans_deleted: int = 0
    unchanged: int = 0
    unmapped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_copied: int = 0
    #: identified paths of the orphans deleted (for the LORIS change feed; never to Dagster)
    deleted: list[str] = field(default_factory=list, repr=False)
    #: counts of the LORIS change feed written by this run
    changes: dict[str, int] = field(default_factory=dict)


def _read_reid_ledger(store: ObjectStoreResource, layout: HbcdLayout) -> dict[str, ReidLedgerEntry]:
    try:
        data = json.loads(gzip.decompress(store.get_bytes(layout.reid_ledger)))
    except (FileNotFoundError, ValueError, OSError, EOFError):
        return {}
    out = {}
    for rel, v in data.get("entries", {}).items():
        with contextlib.suppress(TypeError, ValueError):
            out[rel] = ReidLedgerEntry(*v)
    return out


def _write_reid_ledger(
    store: ObjectStoreResource, layout: HbcdLayout, entries: dict[str, ReidLedgerEntry]
) -> None:
    body = {
        "written_at": datetime.now(UTC).isoformat(),
        "entries": {
            k: [e.src_etag, e.src_last_modified, e.dst_etag] for k, e in sorted(entries.items())
        },
    }
    store.put_bytes(layout.reid_ledger, gzip.compress(json.dumps(body).encode(), mtime=0))


#: Text files up to this size are re-identified in memory and written in one request.
_SMALL = 8 << 20


def _copy_reidentified(
    store: ObjectStoreResource,
    idmap: IdentityMap,
    src_url: str,
    dst_url: str,
    rel: str,
    meta: dict[str, str],
    size: int,
) -> str | None:
    """Copy one derivative to the identified side; returns the copy's ETag when known. Text
    types are re-identified (small ones in one GET and one PUT); every other file is copied
    server-side (S3) byte for byte."""
    if reidentify_content(rel):
        if size <= _SMALL:
            _, data = reidentify_bytes(rel, store.get_bytes(src_url), idmap)
            return put_small(store, dst_url, data, meta)
        with (
            store.open(src_url, "rb", block_size=STREAM_BLOCK) as src,
            store.open(dst_url, "wb", meta, block_size=STREAM_BLOCK) as dst,
        ):
            reidentify_file(rel, src, dst, idmap)
        return None
    if is_s3(src_url) and is_s3(dst_url) and size < S3_SERVER_COPY_LIMIT:
        return server_copy(store, src_url, dst_url, meta)
    with (
        store.open(src_url, "rb", block_size=STREAM_BLOCK) as src,
        store.open(dst_url, "wb", meta, block_size=STREAM_BLOCK) as dst,
    ):
        shutil.copyfileobj(src, dst, 8 << 20)
    return None


def reidentify_derivatives(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap
) -> ReidentifyResult:
    """Sync ``derivatives/`` from the de-identified side to the identified side with RC ->
    DCCID (and anonymized site -> site) in names and in text contents: delete orphans, replace
    copies whose source changed (its LastModified/ETag is recorded on every copy), copy new
    ones, leave the rest (recognised from listings and the ledger)."""
    with scrubbed_errors(idmap, "re-identifying derivatives"):
        src_root, dst_root = layout.deidentified_derivatives, layout.identified_derivatives
        listings = store.list_many([src_root, dst_root], folder=True)
        src_infos = {relpath_of(i, src_root): i for i in listings[src_root]}
        dst_infos = {relpath_of(i, dst_root): i for i in listings[dst_root]}

        def dest(infos: dict[str, ObjectInfo]) -> list[DestObject]:
            return [
                DestObject(rel, i.size, i.etag, i.last_modified, i.metadata)
                for rel, i in infos.items()
            ]

        ledger = _read_reid_ledger(store, layout)
        plan = plan_reidentify(dest(src_infos), dest(dst_infos), idmap, ledger)
        result = ReidentifyResult(unchanged=len(plan.unchanged), unmapped=plan.unmapped)
        new_ledger = {rel: ledger[rel] for rel in plan.unchanged}

        def verify(w: Write) -> tuple[Write, bool]:
            return w, verified_unchanged(w, object_metadata(store, dst_infos[w.dst]))

        copies = list(plan.copy)
        for w, same in map_concurrently(store, verify, plan.verify):
            if same:
                result.unchanged += 1
                new_ledger[w.src] = ReidLedgerEntry(
                    w.etag, iso(w.last_modified), dst_infos[w.dst].etag
                )
            else:
                copies.append(Write(w.src, w.dst, w.etag, "newer", w.last_modified))
        if plan.delete:
            store.delete([join_url(dst_root, rel) for rel in plan.delete])
        result.orphans_deleted = len(plan.delete)
        result.deleted = list(plan.delete)
        scrub = Scrubber(idmap)

        def copy(w: Write) -> tuple[Write, str | None, str | None]:
            src_url, dst_url = join_url(src_root, w.src), join_url(dst_root, w.dst)
            meta = {META_SOURCE_LAST_MODIFIED: iso(w.last_modified), META_SOURCE_ETAG: w.etag or ""}
            try:
                etag = _copy_reidentified(
                    store, idmap, src_url, dst_url, w.src, meta, src_infos[w.src].size
                )
                if etag is None:
                    etag = etag_of(store, dst_url)
            except Exception as e:  # noqa: BLE001 - reported per file, scrubbed
                return w, None, error_reason(e, scrub)
            return w, etag, None

        for w, etag, error in map_concurrently(store, copy, copies):
            if error is not None:
                result.failed[w.src] = error
                continue
            (result.new if w.reason == "new" else result.newer).append(w.src)
            result.bytes_copied += src_infos[w.src].size
            new_ledger[w.src] = ReidLedgerEntry(w.etag, iso(w.last_modified), etag)
        result.new.sort()
        result.newer.sort()
        _write_reid_ledger(store, layout, new_ledger)
        feed = write_change_feed(
            store, layout, idmap, removed=result.deleted, replaced=result.newer, added=result.new
        )
        result.changes = dict(feed["counts"])
        return result
