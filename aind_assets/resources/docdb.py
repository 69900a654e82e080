"""DocDB (MongoDB wire protocol, pymongo): the document database of data assets and records."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pymongo
import pymongo.errors
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr
from pymongo import ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.uri_parser import parse_uri

from aind_assets.resources.redaction import redact_uri, scrub_secrets


class DocDBError(RuntimeError):
    """DocDB could not be reached or used; the message names host and database, never secrets."""


class LeaseHeldError(RuntimeError):
    """Someone else holds the lease; ``holder`` says who."""

    def __init__(self, name: str, holder: str, since: Any):
        self.name, self.holder, self.since = name, holder, since
        super().__init__(f"{name} is held by {holder} since {since}")


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

    def _call(self, fn):
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
        for start in range(0, len(ops), 1000):
            self._call(
                lambda s=start: self.collection(collection).bulk_write(
                    ops[s : s + 1000], ordered=False
                )
            )
        return len(ops)

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

    @contextlib.contextmanager
    def lease(
        self,
        name: str,
        holder: str,
        *,
        is_stale: Callable[[Mapping[str, Any]], bool] = lambda _: False,
        collection: str = "leases",
    ) -> Iterator[None]:
        """Hold ``name`` for the ``with`` block: one holder at a time, across processes.

        The unique index on ``name`` decides between two takers. A lease left by a holder that
        died is taken over when ``is_stale(document)`` says so (conditioned on that holder, so
        two takers cannot both win). Raises :class:`LeaseHeldError` naming the holder.
        """
        mine = {"name": name, "holder": holder, "since": datetime.now(UTC)}
        if not self.insert_unique(collection, mine):
            current = self.find_one(collection, {"name": name}) or {}
            if not current:  # released between our insert and our read: try once more
                if not self.insert_unique(collection, mine):
                    raise LeaseHeldError(name, "another holder", "just now")
            elif not is_stale(current):
                raise LeaseHeldError(name, str(current.get("holder")), current.get("since"))
            elif (
                self._call(
                    lambda: self.collection(collection).find_one_and_replace(
                        {"name": name, "holder": current.get("holder")}, mine
                    )
                )
                is None
            ):
                raise LeaseHeldError(name, "another holder", "just now")
        try:
            yield
        finally:  # best effort: a lease left behind is taken over once its holder is stale
            with contextlib.suppress(DocDBError):
                self._call(
                    lambda: self.collection(collection).delete_one({"name": name, "holder": holder})
                )

    def delete_many(self, collection: str, filter: Mapping[str, Any]) -> int:  # noqa: A002
        return self._call(
            lambda: self.collection(collection).delete_many(dict(filter)).deleted_count
        )


def _scrub(message: str, uri: str) -> str:
    """Remove every secret of ``uri`` from a driver message, whatever the driver put in it."""
    return scrub_secrets(message, uri)
