"""The commit protocol of every IO-manager output (pure: no Dagster).

An output lives at ``<partition>/`` (``<root>/<asset key path>/<partition key>/``)::

    versions/<version id>/   value + processing.json of one materialization (immutable)
    CURRENT.json             the commit pointer: which version is the output, and its record

A write goes: (1) the value, then ``processing.json``, into a new version folder; (2) the DocDB
record, pending; (3) under a short per-output lease, the record made current and every other
record of the output marked superseded (or removed, if it never was current); (4) the pointer,
one atomic PUT (locally a temporary file and ``os.replace``): **the commit**; (5) versions
older than the previous one are deleted (readers still loading the previous one finish).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

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


def read_pointer(partition: UPath) -> dict[str, Any] | None:
    """The pointer of an output, or None when it has none (one GET on S3: opening the file
    would ask its size first)."""
    target = partition / POINTER
    try:
        return json.loads(target.fs.cat_file(target.path))
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


def record_pending(
    docdb: DocDBResource, collection: str, document: Mapping[str, Any], version: str
) -> None:
    """Step 2: the record exists before the commit. A record of the same name (same code on
    the same inputs, so the same record) that is already current stays current until step 3."""
    body = {k: v for k, v in document.items() if k not in ("_id", "pending_version")}
    body["status"] = PENDING
    body["version"] = version
    docdb.update(
        collection,
        {"_id": document["_id"]},
        {"$setOnInsert": body, "$set": {"pending_version": version}},
        upsert=True,
    )


def finalize_records(
    docdb: DocDBResource, collection: str, location: str, document: Mapping[str, Any]
) -> tuple[int, int]:
    """Step 3: ``document`` becomes the output's one current record; the others that were
    current become superseded by it, and those that never were (crashed writes) are removed.
    Returns (superseded, removed)."""
    name = document["_id"]
    docdb.upsert(collection, {"_id": name}, {**document, "status": CURRENT})
    others = {"location": location, "_id": {"$ne": name}}
    removed = docdb.delete_many(collection, {**others, "status": PENDING})
    superseded = docdb.update(
        collection,
        {**others, "status": {"$ne": SUPERSEDED}},  # current, or records older than statuses
        {"$set": {"status": SUPERSEDED, "superseded_by": name}},
        many=True,
    )
    return superseded, removed


def commit(
    partition: UPath,
    version: str,
    document: Mapping[str, Any] | None,
    *,
    docdb: DocDBResource | None,
    collection: str,
    pointer_extra: Mapping[str, Any] | None = None,
    lease_ttl_s: float = 60.0,
    lease_wait_s: float = 180.0,
    checkpoint: Checkpoint = _no_checkpoint,
) -> Outcome:
    """Steps 2 to 5 for a version already written (value and ``processing.json``).

    ``document`` is the DocDB record (``_id`` = name); None without DocDB. Concurrent writers
    of one output are serialized by a DocDB lease on it for steps 3 to 5 (a few requests).
    """
    location = url_of(partition)
    if docdb is not None and document is not None:
        # step 3 selects an output's records by location: indexed, or every commit scans the
        # whole collection (seconds per commit once it holds ~10k records)
        docdb.ensure_index(collection, "location")
        record_pending(docdb, collection, document, version)
    checkpoint("record_pending")
    if docdb is None or document is None:
        return _commit_locked(
            partition, version, document, None, collection, pointer_extra, checkpoint
        )
    with docdb.lease(
        f"io/{location}",
        f"{version}",
        ttl_s=lease_ttl_s,
        wait_s=lease_wait_s,
        collection=f"{collection}_commits",
    ) as lease:
        return _commit_locked(
            partition,
            version,
            document,
            docdb,
            collection,
            pointer_extra,
            checkpoint,
            guard=lease.check,
        )


def _commit_locked(
    partition: UPath,
    version: str,
    document: Mapping[str, Any] | None,
    docdb: DocDBResource | None,
    collection: str,
    pointer_extra: Mapping[str, Any] | None,
    checkpoint: Checkpoint,
    guard: Callable[[], None] = lambda: None,
) -> Outcome:
    location = url_of(partition)
    before = read_pointer(partition)
    previous = str(before["version"]) if before else None
    mine = version_path(partition, version)
    if (previous is not None and previous > version) or not (mine / RECORD_FILE).exists():
        # a later-started write committed first (and may have collected ours): drop ours
        _rm(mine)
        if docdb is not None and document is not None:
            docdb.delete_many(collection, {"_id": document["_id"], "status": PENDING})
            docdb.update(
                collection,
                {"_id": document["_id"], "pending_version": version},
                {"$unset": {"pending_version": ""}},
            )
        return Outcome(False, version, previous, [], 0, 0, f"superseded by {previous}")
    superseded = removed = 0
    if docdb is not None and document is not None:
        guard()
        superseded, removed = finalize_records(
            docdb,
            collection,
            location,
            {**document, "version": version, "version_location": url_of(mine)},
        )
    checkpoint("records_final")
    guard()
    write_pointer(
        partition,
        {
            "version": version,
            "record": document["_id"] if document else None,
            "previous": previous,
            "committed_at": datetime.now(UTC).isoformat(),
            **dict(pointer_extra or {}),
        },
    )
    checkpoint("committed")
    collected, warning = [], None
    try:
        collected = collect(
            partition, keep={version, *([previous] if previous else [])}, below=version
        )
    except OSError as e:  # committed already: clean-up is retried by the next write
        warning = f"old versions of {location} not collected yet: {e}"
    return Outcome(True, version, previous, collected, superseded, removed, warning)


def collect(partition: UPath, *, keep: set[str], below: str) -> list[str]:
    """Delete versions (and legacy files) older than ``below`` that are not in ``keep``:
    superseded ones, and debris of writes that crashed before their commit."""
    gone = []
    # one listing of the output (versions and legacy files) instead of a request per name
    found = entries(partition)
    tops = {e.split("/", 1)[0] for e in found}
    prefix = f"{VERSIONS}/"
    for v in _versions({e[len(prefix) :] for e in found if e.startswith(prefix)}):
        if v < below and v not in keep:
            _rm(version_path(partition, v))
            gone.append(v)
    for name in LEGACY:
        if name in tops:
            _rm(partition / name)
            gone.append(name)
    return gone
