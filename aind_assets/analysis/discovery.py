"""Discovery: DocDB records → dispatch partitions, page by page (pure: no Dagster).

Used by the discovery sensors and by ``aind-assets partitions sync``. One page is:

1. the *probe* (:func:`paging.pipeline_for_page`): the spec's query after the cursor, sorted by
   ``(last_modified, _id)``, limited to the page size, small projection;
2. the dispatch rows those records affect (:func:`paging.pipeline_for_changes`) — or, for plain
   specs (no grouping, latest filtering or unwinding) where a row is a record, the rows straight
   from the probe, saving a query;
3. a partition key per row (:func:`partition_key_of`) and its entry in the **partition map**, a
   DocDB collection holding, per key and per spec, the DocDB ids, asset names, locations and
   group metadata (:class:`PartitionMap`).

Every step costs what the page holds, never what DocDB holds, provided DocDB has an index on
``(last_modified, _id)`` (``ensure_indexes``); the partition map is written one document per
page and read by key through a multikey index.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aind_assets.analysis import paging
from aind_assets.analysis.inputs import split_rows
from aind_assets.analysis.models import DispatchSpec
from aind_assets.analysis.registry import canonical_json

if TYPE_CHECKING:
    from aind_assets.resources.docdb import DocDBResource

__all__ = [
    "DiscoveredPartition",
    "KnownPartitions",
    "Page",
    "PartitionMap",
    "discover_page",
    "discover_pages",
    "ensure_indexes",
    "find_gone",
    "partition_key_of",
    "records_by_id",
    "rows_are_records",
    "rows_to_partitions",
]

#: Insert/compare statuses of :meth:`PartitionMap.record`.
NEW, CHANGED, SAME = "new", "changed", "same"


def partition_key_of(row: Mapping[str, Any], spec: DispatchSpec) -> str:
    """The partition key of a dispatch row: the group key when grouping, else the asset name."""
    if spec.group_by:
        return paging.partition_key_for(dict(row.get("group_metadata") or {}))
    names = row.get("asset_name") or []
    if not names:
        raise ValueError(f"dispatch row without asset_name: {dict(row)!r}")
    return paging.partition_key_for(str(names[0]))


def rows_are_records(spec: DispatchSpec) -> bool:
    """True when each dispatch row is exactly one record (the probe can give the rows)."""
    return not (
        spec.group_by
        or spec.filter_latest
        or spec.unwind_list_fields
        or (spec.drop_null_groups and spec.filter_by)
    )


@dataclass(frozen=True)
class DiscoveredPartition:
    """One partition key of one spec, with the DocDB records it covers."""

    key: str
    spec: str
    docdb_record_id: tuple[Any, ...]
    asset_name: tuple[str, ...]
    s3_location: tuple[str, ...]
    group_metadata: Mapping[str, Any] | None = None

    @property
    def members_hash(self) -> str:
        members = sorted(
            zip(map(str, self.docdb_record_id), self.asset_name, self.s3_location, strict=True)
        )
        payload = canonical_json({"members": members, "group": self.group_metadata})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def entry(self) -> dict[str, Any]:
        """The spec's entry in the partition map document."""
        return {
            "docdb_record_id": list(self.docdb_record_id),
            "asset_name": list(self.asset_name),
            "s3_location": list(self.s3_location),
            "group_metadata": dict(self.group_metadata) if self.group_metadata else None,
            "members": self.members_hash,
        }


def rows_to_partitions(rows: Sequence[Mapping[str, Any]], spec: DispatchSpec) -> list:
    """Dispatch rows → partitions, in row order; rows with the same key are merged."""
    by_key: dict[str, dict[str, list]] = {}
    groups: dict[str, Any] = {}
    for row in rows:
        key = partition_key_of(row, spec)
        slot = by_key.setdefault(key, {"ids": [], "names": [], "locs": []})
        for rid, name, loc in zip(
            row["docdb_record_id"], row["asset_name"], row["s3_location"], strict=True
        ):
            if rid not in slot["ids"]:
                slot["ids"].append(rid)
                slot["names"].append(name)
                slot["locs"].append(loc)
        groups.setdefault(key, row.get("group_metadata"))
    return [
        DiscoveredPartition(
            key=key,
            spec=spec.name,
            docdb_record_id=tuple(slot["ids"]),
            asset_name=tuple(slot["names"]),
            s3_location=tuple(slot["locs"]),
            group_metadata=groups[key],
        )
        for key, slot in by_key.items()
    ]


@dataclass
class Page:
    """One discovery page: the partitions its records affect and the cursor after it."""

    partitions: list[DiscoveredPartition]
    cursor: paging.Cursor | None
    records: int
    full: bool
    seconds: float = 0.0
    #: why records of this page were not registered (no name, no or a bad location)
    rejected: list[str] = field(default_factory=list)


def _query(spec: DispatchSpec, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    query = spec.resolved_query()
    return {"$and": [query, dict(extra)]} if extra else query


def discover_page(
    docdb: DocDBResource,
    assets_collection: str,
    spec: DispatchSpec,
    cursor: paging.Cursor | None,
    page_size: int,
    *,
    extra_query: Mapping[str, Any] | None = None,
) -> Page:
    """The next page of records after ``cursor`` and the partitions they affect."""
    started = time.perf_counter()
    query = _query(spec, extra_query)
    options = spec.pipeline_options()
    direct = rows_are_records(spec)
    probe = paging.pipeline_for_page(
        query, cursor, page_size, extra_fields=["location"] if direct else (), **options
    )
    records = docdb.aggregate(assets_collection, probe)
    if not records:
        return Page([], cursor, 0, False, time.perf_counter() - started)
    new_cursor = paging.next_cursor(records, cursor)
    if direct:
        rows = [
            {
                "s3_location": [r.get("location")],
                "docdb_record_id": [r["_id"]],
                "asset_name": [r.get("name")],
            }
            for r in records
        ]
    else:
        pipeline = paging.pipeline_for_changes(query, records, **options)
        rows = docdb.aggregate(assets_collection, pipeline or [])
    # a record without a usable name or location cannot become a partition: reported, not
    # registered (and not silently dropped, nor keyed "None")
    usable, rejected = split_rows(rows)
    # Partitions in cursor order (of their first record in this page): Dagster keeps dynamic
    # partitions in insertion order, which is what --partition-range a...b follows.
    position = {r["_id"]: i for i, r in enumerate(records)}
    partitions = sorted(
        rows_to_partitions(usable, spec),
        key=lambda p: (min(position.get(i, len(position)) for i in p.docdb_record_id), p.key),
    )
    return Page(
        partitions,
        new_cursor,
        len(records),
        len(records) >= page_size,
        time.perf_counter() - started,
        rejected=[f"{spec.name}: {p}" for p in rejected],
    )


def discover_pages(
    docdb: DocDBResource,
    assets_collection: str,
    spec: DispatchSpec,
    cursor: paging.Cursor | None,
    page_size: int,
    *,
    budget_s: float | None = None,
    extra_query: Mapping[str, Any] | None = None,
) -> Iterator[Page]:
    """Pages after ``cursor`` until one is not full, or ``budget_s`` seconds have passed (the
    caller saves the cursor of the last page it processed and continues next time)."""
    started = time.monotonic()
    while True:
        page = discover_page(
            docdb, assets_collection, spec, cursor, page_size, extra_query=extra_query
        )
        if page.records:
            yield page
        cursor = page.cursor
        if not page.full:
            return
        if budget_s is not None and time.monotonic() - started >= budget_s:
            return


def ensure_indexes(docdb: DocDBResource, assets_collection: str) -> None:
    """The index discovery pages by (idempotent)."""
    docdb.ensure_index(assets_collection, ["last_modified", "_id"])


class KnownPartitions:
    """Which partition keys Dagster already has, asked as cheaply as the numbers allow.

    A few keys: one lookup each (``has``). More than ``bulk_threshold`` keys in a tick: one read
    of every registered key (``all_keys``), then set membership — on SQLite storage a lookup
    costs ~7 ms and reading 50k keys ~0.2 s, so first discovery pays the read once per tick and a
    steady tick with a handful of new keys pays a handful of lookups. Keys added during the tick
    are known at once.
    """

    def __init__(
        self,
        has: Callable[[str], bool],
        all_keys: Callable[[], Iterable[str]] | None = None,
        *,
        bulk_threshold: int = 50,
    ) -> None:
        self._has = has
        self._all_keys = all_keys
        self._threshold = bulk_threshold
        self._all: set[str] | None = None
        self._added: set[str] = set()
        self._lookups = 0

    def check(self, keys: Sequence[str]) -> dict[str, bool]:
        unknown = [k for k in keys if k not in self._added]
        bulk = self._lookups + len(unknown) > self._threshold
        if self._all is None and self._all_keys is not None and bulk:
            self._all = set(self._all_keys())
        out = {k: True for k in keys if k in self._added}
        for key in unknown:
            if self._all is not None:
                out[key] = key in self._all
            else:
                self._lookups += 1
                out[key] = self._has(key)
        return out

    def add(self, keys: Iterable[str]) -> None:
        self._added.update(keys)


# --------------------------------------------------------------------------------------------
# The partition map
# --------------------------------------------------------------------------------------------


class PartitionMap:
    """Partition key → per spec: DocDB ids, asset names, locations, group metadata.

    Stored as an append-only log of *chunks*: one document per spec and discovery page (at most
    ``chunk_size`` entries), ``{_id: "<spec>:<time>:<random>", spec, seq, keys: [...],
    entries: [{key, docdb_record_id, asset_name, s3_location, group_metadata, members}]}``,
    with a multikey index on ``keys``. A tick writes one document per page, not one per
    partition: inserts cost what the page holds on any server (and on mongoeco, whose inserts
    scan the whole collection, one per page rather than one per partition). A key's entry for
    a spec is the newest one; when an entry changes, the older one is pulled from its chunk.
    One key can have entries of several specs (the same data asset selected by two specs is one
    partition).
    """

    def __init__(self, docdb: DocDBResource, collection: str, *, chunk_size: int = 1000) -> None:
        self.docdb = docdb
        self.collection = collection
        self.chunk_size = chunk_size
        self._indexed = False

    def _ensure_index(self) -> None:
        if not self._indexed:
            self.docdb.ensure_index(self.collection, "keys")
            self._indexed = True

    # -- reading ------------------------------------------------------------------------------
    def lookup(self, key: str) -> dict[str, tuple[dict[str, Any], str]]:
        """``{spec: (entry, chunk id)}`` of ``key``, newest entry per spec."""
        self._ensure_index()
        projection = {"spec": 1, "seq": 1, "entries": {"$elemMatch": {"key": key}}}
        chunks = self.docdb.find(self.collection, {"keys": key}, projection=projection)
        found: dict[str, tuple[float, dict[str, Any], str]] = {}
        for chunk in chunks:
            for entry in chunk.get("entries") or []:
                if entry.get("key") != key:
                    continue
                seq = float(chunk.get("seq") or 0)
                if chunk["spec"] not in found or seq > found[chunk["spec"]][0]:
                    found[chunk["spec"]] = (seq, entry, chunk["_id"])
        return {spec: (entry, chunk_id) for spec, (_, entry, chunk_id) in found.items()}

    def get(self, key: str) -> dict[str, Any] | None:
        """``{"_id": key, "specs": {spec: entry}}``, or None for an unknown key."""
        specs = {spec: entry for spec, (entry, _) in self.lookup(key).items()}
        return {"_id": key, "specs": specs} if specs else None

    def chunks(self, spec: str, *, after: str | None, limit: int = 1) -> list[dict[str, Any]]:
        """The chunks of ``spec`` after chunk id ``after``, oldest first (for sweeps)."""
        query = {"_id": {"$gt": after or f"{spec}:", "$lt": f"{spec}:~"}}
        return list(self.docdb.find(self.collection, query, sort=[("_id", 1)], limit=limit))

    # -- writing ------------------------------------------------------------------------------
    def record(
        self,
        partitions: Sequence[DiscoveredPartition],
        exists: Callable[[str], bool] = lambda key: True,
    ) -> dict[str, str]:
        """Store the partitions' entries; key → ``new``, ``changed`` (members differ) or ``same``.

        ``exists(key)`` says whether the partition is already registered (in Dagster): keys that
        are not are new without a lookup, so a tick of new partitions reads nothing here.
        """
        statuses: dict[str, str] = {}
        to_write: list[DiscoveredPartition] = []
        for part in partitions:
            if not exists(part.key):
                statuses[part.key] = NEW
                to_write.append(part)
                continue
            current = self.lookup(part.key).get(part.spec)
            if current is not None and current[0].get("members") == part.members_hash:
                statuses[part.key] = SAME
                continue
            statuses[part.key] = CHANGED if current is not None else NEW
            to_write.append(part)
            if current is not None:
                self._pull(current[1], [part.key])
        self._append(to_write)
        return statuses

    def _append(self, partitions: Sequence[DiscoveredPartition]) -> None:
        if not partitions:
            return
        self._ensure_index()
        by_spec: dict[str, list[DiscoveredPartition]] = {}
        for part in partitions:
            by_spec.setdefault(part.spec, []).append(part)
        now = datetime.now(UTC)
        for spec, parts in by_spec.items():
            for start in range(0, len(parts), self.chunk_size):
                chunk = parts[start : start + self.chunk_size]
                seq = time.time()
                self.docdb.collection(self.collection).insert_one(
                    {
                        "_id": f"{spec}:{seq:017.6f}:{uuid.uuid4().hex[:8]}",
                        "spec": spec,
                        "seq": seq,
                        "written_at": now,
                        "keys": [p.key for p in chunk],
                        "entries": [{"key": p.key, **p.entry()} for p in chunk],
                    }
                )

    def _pull(self, chunk_id: str, keys: Sequence[str]) -> None:
        self.docdb.collection(self.collection).update_one(
            {"_id": chunk_id},
            {"$pull": {"keys": {"$in": list(keys)}, "entries": {"key": {"$in": list(keys)}}}},
        )

    def remove(self, spec: str, keys: Sequence[str]) -> list[str]:
        """Remove ``spec``'s entries of ``keys``; the keys left with no entry of any spec (their
        partitions can go)."""
        emptied = []
        for key in keys:
            for chunk in self.docdb.find(self.collection, {"keys": key}, projection={"spec": 1}):
                if chunk["spec"] == spec:
                    self._pull(chunk["_id"], [key])
            if not self.lookup(key):
                emptied.append(key)
        return emptied


def find_gone(
    docdb: DocDBResource,
    assets_collection: str,
    spec: DispatchSpec,
    entries: Sequence[Mapping[str, Any]],
) -> list[str]:
    """Keys of partition-map ``entries`` (of ``spec``) that its pipeline no longer yields: their
    records were deleted, no longer match the query, were superseded (``filter_latest``) or
    regrouped. Two queries for the batch, whatever DocDB holds.
    """
    ids: list[Any] = []
    for entry in entries:
        ids.extend(entry.get("docdb_record_id") or [])
    if not entries:
        return []
    produced: set[str] = set()
    rows = records_by_id(docdb, assets_collection, ids)
    if rows:
        pipeline = paging.pipeline_for_changes(
            spec.resolved_query(), rows, **spec.pipeline_options()
        )
        for row in docdb.aggregate(assets_collection, pipeline or []):
            if row.get("asset_name"):
                produced.add(partition_key_of(row, spec))
    return [e["key"] for e in entries if e["key"] not in produced]


def records_by_id(
    docdb: DocDBResource, assets_collection: str, ids: Sequence[Any]
) -> list[dict[str, Any]]:
    """The records with these ``_id``s (missing ones are left out), in the given order."""
    unique = list(dict.fromkeys(ids))
    if len(unique) <= 100:
        # Lookups by _id (primary key) one by one: cheap on any server, where an ``$in`` is a
        # collection scan on some (mongoeco).
        found = (docdb.find_one(assets_collection, {"_id": i}) for i in unique)
        return [r for r in found if r is not None]
    return list(docdb.find(assets_collection, {"_id": {"$in": unique}}))
