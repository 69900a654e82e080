"""The commit protocol of every IO-manager output (pure: no Dagster).

An output lives at ``<partition>/`` (``<root>/<asset key path>/<partition key>/``)::

    versions/<version id>/   value + processing.json of one materialization (immutable)
    CURRENT.json             the commit pointer: which version is the output, and its record

A write goes: (1) the value, then ``processing.json``, into a new version folder; (2) the DocDB
record, pending; (3) under a short per-output lease, the record made current and every other
record of the output marked superseded (or removed, if it never was current); (4) the pointer,
one atomic PUT (locally a temporary file and ``os.replace``): **the commit**; (5) versions
older than the previous one are deleted (readers still loading the previous one finish).

The outputs of a run over many partitions take each step together (:func:`commit_many`): one
DocDB request per step for all of them, each output still under its own lease.

So a version is loaded only once its value, ``processing.json`` and record all exist; a crash
anywhere before (4) leaves the previous output current and its debris (a version folder, a
pending record) is cleaned by the next write of that output; after (4) only clean-up is left.
Readers follow the pointer and retry when a version vanishes under them (collected between
reading the pointer and the value). A partition written before this protocol (processing.json
beside the value, no pointer) still loads.

Version ids sort by start time. Of two writers of one output, the later-started wins: a writer
that finds a newer version committed drops its own (the step still succeeds: it was
superseded), so the pointer only ever moves forward.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from pymongo import ReplaceOne, UpdateMany, UpdateOne
from upath import UPath

if TYPE_CHECKING:
    from aind_assets.resources.docdb import DocDBResource

POINTER = "CURRENT.json"
VERSIONS = "versions"
RECORD_FILE = "processing.json"
#: Files of the layout before versions (still loaded; removed by the first versioned write).
LEGACY = ("processing.json", "value.json", "value.parquet", "data")

PENDING, CURRENT, SUPERSEDED = "pending", "current", "superseded"
#: How many times a reader re-reads the pointer when the version it named vanished.
READ_ATTEMPTS = 5
#: Outputs committed together at most: the batched DocDB requests select by lists of names and
#: locations, and servers bound a query's size (mongoeco refuses an ``$in`` of 1,000).
COMMIT_CHUNK = 200


class IncompleteOutputError(FileNotFoundError):
    """The output exists but nothing of it was committed: it is unfinished, never loaded."""


class Checkpoint(Protocol):
    def __call__(self, step: str) -> None: ...


def _no_checkpoint(step: str) -> None:
    return None


def new_version_id(run_id: str | None, now: datetime | None = None) -> str:
    """``<UTC time to the microsecond>-<run id prefix>-<random>``: sorts by start time."""
    now = now or datetime.now(UTC)
    run = (run_id or "norun").replace("-", "")[:8]
    return f"{now:%Y%m%dT%H%M%S%fZ}-{run}-{uuid.uuid4().hex[:6]}"


def version_path(partition: UPath, version: str) -> UPath:
    return partition / VERSIONS / version


def read_bytes(path: UPath) -> bytes:
    """A whole small file: one GET on S3 (s3fs would ask its size first, in a HEAD, to decide
    whether to read it in concurrent ranges)."""
    if path.protocol in ("s3", "s3a"):
        return path.fs.cat_file(path.path, max_concurrency=1)
    return path.fs.cat_file(path.path)


def read_pointer(partition: UPath) -> dict[str, Any] | None:
    """The pointer of an output, or None when it has none."""
    try:
        return json.loads(read_bytes(partition / POINTER))
    except FileNotFoundError:
        return None


def write_pointer(partition: UPath, pointer: Mapping[str, Any]) -> None:
    """Replace the pointer atomically: one PUT on S3, a renamed temporary file locally."""
    data = json.dumps(dict(pointer), indent=1, default=str).encode()
    target = partition / POINTER
    if target.protocol in ("", "file", "local"):
        os.makedirs(partition.path, exist_ok=True)
        tmp = f"{target.path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target.path)
    else:
        target.fs.pipe_file(target.path, data)


def entries(partition: UPath) -> set[str]:
    """Paths (relative to ``partition``) of every object below it: one listing."""
    try:
        files = partition.fs.find(partition.path, withdirs=False)
    except (FileNotFoundError, NotADirectoryError):
        return set()
    start = len(partition.path.rstrip("/")) + 1
    return {f[start:] for f in files if len(f) > start}


def list_versions(partition: UPath) -> list[str]:
    """Version folders holding at least one object (S3 servers may keep empty prefixes)."""
    return _versions(entries(partition / VERSIONS))


def _versions(names: set[str]) -> list[str]:
    return sorted({e.split("/", 1)[0] for e in names})


def committed_folder(partition: UPath) -> UPath:
    """Where the committed value of an output is (its current version, or a legacy folder)."""
    pointer = read_pointer(partition)
    if pointer is not None:
        return version_path(partition, str(pointer["version"]))
    if (partition / RECORD_FILE).exists():
        return partition  # written before versions
    if partition.exists():
        raise IncompleteOutputError(
            f"{url_of(partition)} has no committed version ({POINTER}): the output was not "
            "completely written; re-materialize it"
        )
    raise FileNotFoundError(f"no output at {url_of(partition)}")


def load_committed[T](partition: UPath, load: Callable[[UPath], T]) -> tuple[T, UPath]:
    """``load(folder)`` on the committed folder, re-reading the pointer when the version it
    named was collected meanwhile (a concurrent writer); returns the value and the folder."""
    last: FileNotFoundError | None = None
    for _ in range(READ_ATTEMPTS):
        folder = committed_folder(partition)
        try:
            return load(folder), folder
        except IncompleteOutputError:
            raise
        except FileNotFoundError as e:
            last = e
            if read_pointer(partition) is None:
                break
    raise FileNotFoundError(
        f"the committed version of {url_of(partition)} kept vanishing while being read "
        f"({READ_ATTEMPTS} attempts; many concurrent writers?): {last}"
    )


def url_of(path: UPath) -> str:
    return str(path) if path.protocol in ("s3", "s3a") else path.path


def _rm(path: UPath) -> None:
    """Delete a file or a whole folder (an S3 prefix is not always seen as a directory)."""
    if path.exists():
        path.fs.rm(path.path, recursive=True)


@dataclass
class Outcome:
    """What a commit did: ``committed`` False means a newer write won (ours was dropped)."""

    committed: bool
    version: str
    previous: str | None
    collected: list[str]
    superseded: int
    removed: int
    warning: str | None = None


@dataclass
class Write:
    """One output's new version, written already (value and ``processing.json``), to commit.
    ``document`` is its DocDB record (``_id`` = name); None without DocDB."""

    partition: UPath
    version: str
    document: Mapping[str, Any] | None
    pointer_extra: Mapping[str, Any] | None = None


def record_pending(docdb: DocDBResource, collection: str, writes: Sequence[Write]) -> None:
    """Step 2: the records exist before the commit (one request for all). A record of the same
    name (same code on the same inputs, so the same record) that is already current stays
    current until step 3."""
    ops = []
    for w in writes:
        assert w.document is not None
        body = {k: v for k, v in w.document.items() if k not in ("_id", "pending_version")}
        body["status"] = PENDING
        body["version"] = w.version
        ops.append(
            UpdateOne(
                {"_id": w.document["_id"]},
                {"$setOnInsert": body, "$set": {"pending_version": w.version}},
                upsert=True,
            )
        )
    docdb.bulk_write(collection, ops, ordered=False)


def finalize_records(
    docdb: DocDBResource, collection: str, documents: Mapping[str, Mapping[str, Any]]
) -> dict[str, tuple[int, int]]:
    """Step 3, for outputs by location: each ``documents[location]`` becomes its output's one
    current record; the output's others that were current become superseded by it, and those
    that never were (crashed writes) are removed. A few requests for all the outputs.
    Returns (superseded, removed) by location."""
    names = [d["_id"] for d in documents.values()]
    docdb.bulk_write(
        collection,
        [
            ReplaceOne({"_id": d["_id"]}, {**d, "status": CURRENT}, upsert=True)
            for d in documents.values()
        ],
        ordered=False,
    )
    others = docdb.find(  # an output's superseded history stays out of it
        collection,
        {
            "location": {"$in": list(documents)},
            "_id": {"$nin": names},
            "status": {"$ne": SUPERSEDED},
        },
        projection=["location", "status"],
    )
    counts = {location: [0, 0] for location in documents}
    for other in others:
        if other.get("status") == PENDING:
            counts[other["location"]][1] += 1
        else:  # current, or records older than statuses
            counts[other["location"]][0] += 1
    crashed = [location for location, (_, removed) in counts.items() if removed]
    if crashed:
        docdb.delete_many(
            collection, {"location": {"$in": crashed}, "_id": {"$nin": names}, "status": PENDING}
        )
    docdb.bulk_write(
        collection,
        [
            UpdateMany(
                {"location": location, "_id": {"$ne": d["_id"]}, "status": {"$ne": SUPERSEDED}},
                {"$set": {"status": SUPERSEDED, "superseded_by": d["_id"]}},
            )
            for location, d in documents.items()
            if counts[location][0]
        ],
        ordered=False,
    )
    return {location: (c[0], c[1]) for location, c in counts.items()}


def commit_many(
    writes: Sequence[Write],
    *,
    docdb: DocDBResource | None,
    collection: str,
    lease_ttl_s: float = 60.0,
    lease_wait_s: float = 180.0,
    checkpoint: Checkpoint = _no_checkpoint,
    workers: int = 8,
) -> list[Outcome]:
    """Steps 2 to 5 for versions of different outputs (a ranged run's partitions), each step
    taken for all of them at once (``COMMIT_CHUNK`` at a time): one DocDB request per step
    instead of one per output, and the object-store requests ``workers`` at a time. Each output keeps its own protocol:
    concurrent writers of one output are serialized by a DocDB lease on it for steps 3 to 5."""
    if len(writes) > COMMIT_CHUNK:
        return [
            outcome
            for start in range(0, len(writes), COMMIT_CHUNK)
            for outcome in commit_many(
                writes[start : start + COMMIT_CHUNK],
                docdb=docdb,
                collection=collection,
                lease_ttl_s=lease_ttl_s,
                lease_wait_s=lease_wait_s,
                checkpoint=checkpoint,
                workers=workers,
            )
        ]
    if not writes:
        return []
    recorded = docdb is not None and all(w.document is not None for w in writes)
    if recorded:
        assert docdb is not None
        # step 3 selects an output's records by location: indexed, or every commit scans the
        # whole collection (seconds per commit once it holds ~10k records)
        docdb.ensure_index(collection, "location")
        record_pending(docdb, collection, writes)
    checkpoint("record_pending")
    if not recorded:
        return _commit_locked(writes, None, collection, checkpoint, workers)
    assert docdb is not None
    from aind_assets.resources.lease_sets import hold_many  # DocDB's client: only when used

    more = f" and {len(writes) - 1} more" if len(writes) > 1 else ""
    with hold_many(
        docdb,
        [f"io/{url_of(w.partition)}" for w in writes],
        f"{writes[0].version}{more}",
        collection=f"{collection}_commits",
        ttl_s=lease_ttl_s,
        wait_s=lease_wait_s,
    ) as leases:
        return _commit_locked(writes, docdb, collection, checkpoint, workers, leases.check)


def _each[T, R](fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    if len(items) <= 1 or workers <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _drop(w: Write, previous: str | None, docdb: DocDBResource | None, collection: str) -> Outcome:
    """A later-started write committed first (and may have collected ours): drop ours."""
    _rm(version_path(w.partition, w.version))
    if docdb is not None and w.document is not None:
        docdb.delete_many(collection, {"_id": w.document["_id"], "status": PENDING})
        docdb.update(
            collection,
            {"_id": w.document["_id"], "pending_version": w.version},
            {"$unset": {"pending_version": ""}},
        )
    return Outcome(False, w.version, previous, [], 0, 0, f"superseded by {previous}")


def _commit_locked(
    writes: Sequence[Write],
    docdb: DocDBResource | None,
    collection: str,
    checkpoint: Checkpoint,
    workers: int,
    guard: Callable[[], None] = lambda: None,
) -> list[Outcome]:
    def look(w: Write) -> tuple[str | None, set[str]]:
        # the pointer, and one listing of the output: is our version still whole, and what
        # is there to collect
        before = read_pointer(w.partition)
        return (str(before["version"]) if before else None), entries(w.partition)

    looked = _each(look, writes, workers)
    outcomes: dict[int, Outcome] = {}
    live: list[int] = []
    for i, (w, (previous, found)) in enumerate(zip(writes, looked, strict=True)):
        if (previous is not None and previous > w.version) or (
            f"{VERSIONS}/{w.version}/{RECORD_FILE}" not in found
        ):
            outcomes[i] = _drop(w, previous, docdb, collection)
        else:
            live.append(i)
    if not live:
        return [outcomes[i] for i in range(len(writes))]
    counts: dict[str, tuple[int, int]] = {}
    if docdb is not None:
        guard()
        counts = finalize_records(
            docdb,
            collection,
            {
                url_of(writes[i].partition): {
                    **(writes[i].document or {}),
                    "version": writes[i].version,
                    "version_location": url_of(
                        version_path(writes[i].partition, writes[i].version)
                    ),
                }
                for i in live
            },
        )
    checkpoint("records_final")
    guard()

    def publish(i: int) -> None:
        w, previous = writes[i], looked[i][0]
        pointer = {
            "version": w.version,
            "record": w.document["_id"] if w.document else None,
            "previous": previous,
            "committed_at": datetime.now(UTC).isoformat(),
            **dict(w.pointer_extra or {}),
        }
        write_pointer(w.partition, pointer)

    _each(publish, live, workers)
    checkpoint("committed")

    def clean(i: int) -> Outcome:
        w, (previous, found) = writes[i], looked[i]
        collected, warning = [], None
        try:
            keep = {w.version, *([previous] if previous else [])}
            collected = collect(w.partition, keep=keep, below=w.version, found=found)
        except OSError as e:  # committed already: clean-up is retried by the next write
            warning = f"old versions of {url_of(w.partition)} not collected yet: {e}"
        superseded, removed = counts.get(url_of(w.partition), (0, 0))
        return Outcome(True, w.version, previous, collected, superseded, removed, warning)

    for i, outcome in zip(live, _each(clean, live, workers), strict=True):
        outcomes[i] = outcome
    return [outcomes[i] for i in range(len(writes))]


def collect(
    partition: UPath, *, keep: set[str], below: str, found: set[str] | None = None
) -> list[str]:
    """Delete versions (and legacy files) older than ``below`` that are not in ``keep``:
    superseded ones, and debris of writes that crashed before their commit. ``found``: the
    output's :func:`entries`, if already listed (a version written since is newer, or debris
    the next write collects)."""
    # one listing of the output (versions and legacy files) instead of a request per name
    found = entries(partition) if found is None else found
    prefix = f"{VERSIONS}/"
    listed = _versions({e[len(prefix) :] for e in found if e.startswith(prefix)})
    old = [v for v in listed if v < below and v not in keep]
    tops = {e.split("/", 1)[0] for e in found}
    legacy = [name for name in LEGACY if name in tops]
    doomed = [f"{VERSIONS}/{v}" for v in old] + legacy
    if partition.protocol in ("s3", "s3a"):
        # the listed objects, in one DeleteObjects per 1000 (no listing or HEAD per folder)
        keys = sorted(e for e in found if any(e == d or e.startswith(f"{d}/") for d in doomed))
        if keys:
            partition.fs.rm([f"{partition.path}/{k}" for k in keys])
    else:
        for name in doomed:
            _rm(partition / name)
    return old + legacy
