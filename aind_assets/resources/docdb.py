"""DocDB (MongoDB wire protocol, pymongo): the document database of data assets and records."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pymongo
import pymongo.errors
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr
from pymongo import ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.results import BulkWriteResult
from pymongo.uri_parser import parse_uri

from aind_assets.resources.redaction import redact_uri, scrub_secrets

T = TypeVar("T")


class DocDBError(RuntimeError):
    """DocDB could not be reached or used; the message names host and database, never secrets."""


class LeaseHeldError(RuntimeError):
    """Someone else holds the lease; ``holder`` says who (and ``deployment`` where)."""

    def __init__(
        self,
        name: str,
        holder: str,
        since: Any,
        *,
        deployment: str | None = None,
        expires_at: Any = None,
    ):
        self.name, self.holder, self.since = name, holder, since
        self.deployment, self.expires_at = deployment, expires_at
        where = f" of deployment {deployment}" if deployment else ""
        until = f", expires at {expires_at} unless renewed" if expires_at else ""
        super().__init__(f"{name} is held by {holder}{where} since {since}{until}")


class LeaseLostError(RuntimeError):
    """The lease expired or was taken over while held: stop before changing anything more."""


def lease_expired(document: Mapping[str, Any], now: datetime | None = None) -> bool:
    """Whether a lease document is past its ``expires_at`` (no expiry: never)."""
    expires = document.get("expires_at")
    if not isinstance(expires, datetime):
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires < (now or datetime.now(UTC))


class Lease:
    """A lease held by this process; a heartbeat thread keeps ``expires_at`` in the future.

    ``check()`` raises :class:`LeaseLostError` once the lease was found expired or taken
    over: call it before every step that must only run under the lease.
    """

    def __init__(
        self,
        docdb: DocDBResource,
        collection: str,
        name: str,
        holder: str,
        deployment: str | None,
        ttl_s: float | None,
    ) -> None:
        self.docdb, self.collection, self.name, self.holder = docdb, collection, name, holder
        self.deployment, self.ttl_s = deployment, ttl_s
        self.token = uuid.uuid4().hex
        self.expires_at: datetime | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def document(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        self.token = uuid.uuid4().hex
        self.expires_at = now + timedelta(seconds=self.ttl_s) if self.ttl_s else None
        doc: dict[str, Any] = {
            "name": self.name,
            "holder": self.holder,
            "token": self.token,
            "since": now,
            "deployment": self.deployment,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        if self.expires_at is not None:
            doc["expires_at"] = self.expires_at
        return doc

    def renew(self) -> bool:
        """Push the expiry forward; False (and ``lost``) when the lease is no longer ours."""
        if not self.ttl_s:
            return True
        expires = datetime.now(UTC) + timedelta(seconds=self.ttl_s)
        try:
            matched = self.docdb.update(
                self.collection,
                {"name": self.name, "token": self.token},
                {"$set": {"expires_at": expires}},
            )
        except DocDBError:
            if self.expires_at is not None and datetime.now(UTC) >= self.expires_at:
                self.lost.set()  # could not renew in time: someone may take it over now
            return not self.lost.is_set()
        if matched == 0:
            self.lost.set()
            return False
        self.expires_at = expires
        return True

    def check(self) -> None:
        if self.lost.is_set() or (
            self.expires_at is not None and datetime.now(UTC) >= self.expires_at
        ):
            self.lost.set()
            raise LeaseLostError(
                f"lease {self.name} of {self.holder} expired or was taken over while held "
                "(DocDB unreachable for longer than its time to live?): stopping"
            )

    def start_heartbeat(self) -> None:
        if not self.ttl_s:
            return
        interval = self.ttl_s / 4

        def beat() -> None:
            while not self._stop.wait(interval):
                if not self.renew():
                    return

        self._thread = threading.Thread(target=beat, name=f"lease {self.name}", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _hosts(uri: str) -> str:
    try:
        return ",".join(f"{h}:{p}" for h, p in parse_uri(uri, validate=False)["nodelist"])
    except Exception:  # noqa: BLE001 - only used to describe a URI that already failed
        return redact_uri(uri)


class DocDBResource(ConfigurableResource):
    """A pymongo client for one database, created on first use and shared per process.

    Usable outside Dagster: ``DocDBResource(uri="mongodb://127.0.0.1:27017", database="x")``.
    """

    uri: str = Field(
        description="MongoDB URI; comes from an EnvVar so passwords stay out of config"
    )
    database: str = Field(description="Database holding the collections")
    server_selection_timeout_ms: int = Field(
        default=10_000, description="How long to wait for an unreachable server before failing"
    )
    connect_timeout_ms: int = Field(
        default=20_000,
        description="How long one connection handshake may take; a busy server is slow, not gone",
    )
    app_name: str = "aind-assets"

    _client: pymongo.MongoClient | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _indexed: set[tuple[str, tuple, bool]] = PrivateAttr(default_factory=set)

    # -- connection ---------------------------------------------------------------------------
    def _where(self) -> str:
        return f"DocDB at {_hosts(self.uri)} (database {self.database!r})"

    @property
    def client(self) -> pymongo.MongoClient:
        with self._lock:
            if self._client is None:
                try:
                    if not self.uri.startswith(("mongodb://", "mongodb+srv://")):
                        raise ValueError("it must start with mongodb:// or mongodb+srv://")
                    parse_uri(self.uri, validate=True, connect_timeout=1)
                    self._client = pymongo.MongoClient(
                        self.uri,
                        serverSelectionTimeoutMS=self.server_selection_timeout_ms,
                        connectTimeoutMS=self.connect_timeout_ms,
                        appname=self.app_name,
                        tz_aware=True,
                    )
                except (
                    pymongo.errors.ConfigurationError,
                    pymongo.errors.InvalidURI,
                    ValueError,
                ) as e:
                    raise DocDBError(
                        f"Malformed DocDB URI {redact_uri(self.uri)!r} (database {self.database!r}): "
                        f"{_scrub(str(e), self.uri)}"
                    ) from None
            return self._client

    def collection(self, name: str) -> Collection:
        return self.client[self.database][name]

    def ping(self) -> None:
        """Fail fast, with one clear error, when the server cannot be reached."""
        self._call(lambda: self.client[self.database].command("ping"))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def teardown_after_execution(self, context) -> None:  # noqa: ANN001 - dagster hook
        self.close()

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one driver operation; every driver failure becomes a :class:`DocDBError` naming
        the host and database, with the password scrubbed (duplicates are answers, not errors)."""
        try:
            return fn()
        except pymongo.errors.ServerSelectionTimeoutError as e:
            raise DocDBError(
                f"Cannot reach {self._where()} within {self.server_selection_timeout_ms} ms: "
                f"{_scrub(str(e).split(' (configured')[0].split(', Timeout')[0], self.uri)}"
            ) from None
        except pymongo.errors.DuplicateKeyError:
            raise  # callers decide: a duplicate is an answer, not a failure
        except pymongo.errors.OperationFailure as e:
            raise DocDBError(
                f"{self._where()} refused the operation: {_scrub(str(e), self.uri)}"
            ) from e
        except pymongo.errors.ConnectionFailure as e:  # AutoReconnect, NetworkTimeout, ...
            raise DocDBError(
                f"Lost the connection to {self._where()} during the operation "
                f"({type(e).__name__}): {_scrub(str(e).split(' (configured')[0], self.uri)}"
            ) from None
        except pymongo.errors.PyMongoError as e:
            raise DocDBError(
                f"{self._where()} failed ({type(e).__name__}): {_scrub(str(e), self.uri)}"
            ) from None

    # -- indexes ------------------------------------------------------------------------------
    def ensure_index(
        self, collection: str, keys: Sequence[str] | str, *, unique: bool = False
    ) -> None:
        """Create an index once per process (idempotent on the server too)."""
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        tag = (collection, keys, unique)
        if tag in self._indexed:
            return
        self._call(
            lambda: self.collection(collection).create_index(
                [(k, pymongo.ASCENDING) for k in keys], unique=unique
            )
        )
        self._indexed.add(tag)

    # -- reads --------------------------------------------------------------------------------
    def aggregate(
        self, collection: str, pipeline: Sequence[Mapping[str, Any]], *, batch_size: int = 1000
    ) -> list[dict[str, Any]]:
        return self._call(
            lambda: list(
                self.collection(collection).aggregate(list(pipeline), batchSize=batch_size)
            )
        )

    def find(
        self,
        collection: str,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - pymongo's name
        *,
        projection: Mapping[str, Any] | Sequence[str] | None = None,
        sort: Sequence[tuple[str, int]] | None = None,
        limit: int = 0,
        batch_size: int = 1000,
    ) -> Iterator[dict[str, Any]]:
        """A cursor over matching documents; iterate it to page through large results."""
        cursor = self._call(
            lambda: self.collection(collection).find(
                dict(filter or {}), projection, sort=sort, limit=limit, batch_size=batch_size
            )
        )
        return self._iter(cursor)

    def _iter(self, cursor) -> Iterator[dict[str, Any]]:
        it = iter(cursor)
        while True:
            try:
                doc = self._call(lambda: next(it))
            except StopIteration:
                return
            yield doc

    def find_one(self, collection: str, filter: Mapping[str, Any]) -> dict[str, Any] | None:  # noqa: A002
        return self._call(lambda: self.collection(collection).find_one(dict(filter)))

    def count(self, collection: str, filter: Mapping[str, Any] | None = None) -> int:  # noqa: A002
        return self._call(lambda: self.collection(collection).count_documents(dict(filter or {})))

    # -- writes -------------------------------------------------------------------------------
    def upsert(
        self, collection: str, filter: Mapping[str, Any], document: Mapping[str, Any]
    ) -> None:  # noqa: A002
        """Replace the document matching ``filter``, or insert it."""
        self._call(
            lambda: self.collection(collection).replace_one(
                dict(filter), dict(document), upsert=True
            )
        )

    def bulk_upsert(
        self, collection: str, documents: Iterable[Mapping[str, Any]], *, key: str = "_id"
    ) -> int:
        """Upsert many documents by ``key`` in one round trip per 1000; returns how many."""
        ops = [ReplaceOne({key: d[key]}, dict(d), upsert=True) for d in documents]
        col = self.collection(collection)
        for start in range(0, len(ops), 1000):
            self._call(functools.partial(col.bulk_write, ops[start : start + 1000], ordered=False))
        return len(ops)

    def bulk_write(
        self, collection: str, operations: Sequence[Any], *, ordered: bool = True
    ) -> BulkWriteResult | None:
        """pymongo operations (``UpdateOne``, ``ReplaceOne``, ``UpdateMany``...) in one round trip
        (None when there are none)."""
        if not operations:
            return None
        col = self.collection(collection)
        return self._call(lambda: col.bulk_write(list(operations), ordered=ordered))

    def set_fields(
        self, collection: str, filter: Mapping[str, Any], fields: Mapping[str, Any]
    ) -> None:  # noqa: A002
        self._call(
            lambda: self.collection(collection).bulk_write(
                [UpdateOne(dict(filter), {"$set": dict(fields)})]
            )
        )

    def insert_unique(
        self, collection: str, document: Mapping[str, Any], *, key: str = "name"
    ) -> bool:
        """Insert unless a document with the same ``key`` exists; race-free by a unique index.

        Returns False when another writer got there first.
        """
        self.ensure_index(collection, key, unique=True)
        try:
            self._call(lambda: self.collection(collection).insert_one(dict(document)))
        except pymongo.errors.DuplicateKeyError:
            return False
        return True

    def insert_many_unique(
        self, collection: str, documents: Sequence[Mapping[str, Any]], *, key: str = "name"
    ) -> list[bool]:
        """:meth:`insert_unique` for many documents in one round trip: whether each was
        inserted (False: a document with its ``key`` exists)."""
        self.ensure_index(collection, key, unique=True)
        docs = [dict(d) for d in documents]
        if not docs:
            return []
        try:
            self._call(lambda: self.collection(collection).insert_many(docs, ordered=False))
        except DocDBError as e:
            errors = (getattr(e.__cause__, "details", None) or {}).get("writeErrors", [])
            if not errors or any(err.get("code") != 11000 for err in errors):
                raise  # not only duplicates: a failure
            refused = {err["index"] for err in errors}
            return [i not in refused for i in range(len(docs))]
        return [True] * len(docs)

    def update(
        self,
        collection: str,
        filter: Mapping[str, Any],  # noqa: A002 - pymongo's name
        update: Mapping[str, Any],
        *,
        upsert: bool = False,
        many: bool = False,
    ) -> int:
        """Apply an update document (``$set``, ``$setOnInsert``...); returns how many matched."""
        col = self.collection(collection)
        op = col.update_many if many else col.update_one
        result = self._call(lambda: op(dict(filter), dict(update), upsert=upsert))
        return result.matched_count + (1 if result.upserted_id is not None else 0)

    @contextlib.contextmanager
    def lease(
        self,
        name: str,
        holder: str,
        *,
        is_stale: Callable[[Mapping[str, Any]], bool] = lambda _: False,
        collection: str = "leases",
        ttl_s: float | None = None,
        deployment: str | None = None,
        wait_s: float = 0.0,
    ) -> Iterator[Lease]:
        """Hold ``name`` for the ``with`` block: one holder at a time, across processes and
        across deployments sharing this DocDB.

        The unique index on ``name`` decides between two takers. With ``ttl_s`` the lease
        carries ``expires_at``, renewed by a heartbeat thread every ``ttl_s / 4``: a lease past
        its expiry was left by a holder that stopped (killed, or cut off), whoever it was. A
        lease not yet expired is taken over only when ``is_stale(document)`` says so; callers
        use it for what they know for sure (a run of their own ``deployment`` that ended).
        Takeovers are conditioned on the old holder's token, so two takers cannot both win.
        Waits up to ``wait_s`` for a held lease, then raises :class:`LeaseHeldError`.
        """
        lease = Lease(self, collection, name, holder, deployment, ttl_s)
        self.acquire_waiting(lease, wait_s, is_stale)
        lease.start_heartbeat()
        try:
            yield lease
        finally:  # best effort: a lease left behind expires, or is found stale
            lease.stop_heartbeat()
            with contextlib.suppress(DocDBError):
                self._call(
                    lambda: self.collection(collection).delete_one(
                        {"name": name, "token": lease.token}
                    )
                )

    def acquire_waiting(
        self,
        lease: Lease,
        wait_s: float,
        is_stale: Callable[[Mapping[str, Any]], bool] = lambda _: False,
    ) -> None:
        """Take ``lease``, waiting up to ``wait_s`` while someone else holds it."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._acquire(lease, is_stale)
                return
            except LeaseHeldError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _acquire(self, lease: Lease, is_stale: Callable[[Mapping[str, Any]], bool]) -> None:
        mine = lease.document()
        if self.insert_unique(lease.collection, mine):
            return
        current = self.find_one(lease.collection, {"name": lease.name}) or {}
        if not current:  # released between our insert and our read: try once more
            if not self.insert_unique(lease.collection, lease.document()):
                raise LeaseHeldError(lease.name, "another holder", "just now")
            return
        if not (lease_expired(current) or is_stale(current)):
            raise LeaseHeldError(
                lease.name,
                str(current.get("holder")),
                current.get("since"),
                deployment=current.get("deployment"),
                expires_at=current.get("expires_at"),
            )
        taken = self._call(
            lambda: self.collection(lease.collection).find_one_and_replace(
                {
                    "name": lease.name,
                    "holder": current.get("holder"),
                    # leases of earlier versions have no token
                    "token": current.get("token", {"$exists": False}),
                },
                lease.document(),
            )
        )
        if taken is None:
            raise LeaseHeldError(lease.name, "another holder", "just now")

    def delete_many(self, collection: str, filter: Mapping[str, Any]) -> int:  # noqa: A002
        return self._call(
            lambda: self.collection(collection).delete_many(dict(filter)).deleted_count
        )


def _scrub(message: str, uri: str) -> str:
    """Remove every secret of ``uri`` from a driver message, whatever the driver put in it."""
    return scrub_secrets(message, uri)
