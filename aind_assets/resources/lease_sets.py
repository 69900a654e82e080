"""Many DocDB leases held together: taken, renewed and released in one request each.

A ranged run commits each partition's output under that output's own lease
(:meth:`DocDBResource.lease`); taking fifty of them one by one is fifty inserts, fifty heartbeat
threads and fifty deletes. :func:`hold_many` keeps every rule of a single lease (a unique name,
a time to live renewed by a heartbeat, takeover of an expired lease conditioned on its token)
and batches the requests: the free names are taken in one ``insert_many``; a name someone else
holds makes it give back what it took and take every name one by one in name order, the
single-lease way (waiting up to ``wait_s`` each; two overlapping batches never deadlock); one
heartbeat renews them all; one ``delete_many`` releases them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

from aind_assets.resources.docdb import DocDBError, DocDBResource, Lease


class LeaseSet:
    """Leases held together; :meth:`check` before every step that must run under all of them."""

    def __init__(self, leases: list[Lease]) -> None:
        #: shared with :func:`hold_many`, which adds the leases as it takes them
        self.leases = leases

    def check(self) -> None:
        """Raise :class:`~aind_assets.resources.docdb.LeaseLostError` if any lease was lost."""
        for lease in self.leases:
            lease.check()

    def renew(self) -> None:
        """Push every expiry forward in one update; a lease the update missed is renewed on its
        own (which finds it lost, or recovers a transient miss)."""
        leases = list(self.leases)
        ttl_s = leases[0].ttl_s if leases else None
        if not ttl_s:
            return
        first = leases[0]
        expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
        tokens = [lease.token for lease in leases]
        try:
            matched = first.docdb.update(
                first.collection,
                {"token": {"$in": tokens}},
                {"$set": {"expires_at": expires}},
                many=True,
            )
        except DocDBError:
            matched = -1
        if matched == len(leases):
            for lease in leases:
                lease.expires_at = expires
            return
        for lease in leases:
            lease.renew()


@contextlib.contextmanager
def hold_many(
    docdb: DocDBResource,
    names: Sequence[str],
    holder: str,
    *,
    collection: str,
    ttl_s: float | None,
    wait_s: float,
) -> Iterator[LeaseSet]:
    """Hold every lease of ``names`` for the ``with`` block (see the module docstring)."""
    unique = list(dict.fromkeys(names))
    leases = [Lease(docdb, collection, name, holder, None, ttl_s) for name in unique]
    held: list[Lease] = []
    group = LeaseSet(held)
    stop = threading.Event()
    beat: threading.Thread | None = None
    if ttl_s:  # from the first lease taken: one may wait for the next ones longer than its TTL

        def heartbeat() -> None:
            while not stop.wait(ttl_s / 4):
                group.renew()

        beat = threading.Thread(target=heartbeat, name="lease set", daemon=True)
        beat.start()
    try:
        inserted = docdb.insert_many_unique(collection, [lease.document() for lease in leases])
        held.extend(lease for lease, ok in zip(leases, inserted, strict=True) if ok)
        if not all(inserted):
            # Someone holds some of them (or left them expired). Holding ours while waiting
            # for theirs could deadlock two overlapping batches: give ours back and take all
            # of them one by one, in name order, the single-lease way (waiters in one order
            # never wait on each other in a cycle).
            _release(docdb, collection, held)
            held.clear()
            for name in sorted(unique):  # new leases: a renewal racing the release is moot
                lease = Lease(docdb, collection, name, holder, None, ttl_s)
                docdb.acquire_waiting(lease, wait_s)
                held.append(lease)
        yield group
    finally:  # best effort: a lease left behind expires
        stop.set()
        if beat is not None:
            beat.join(timeout=30)
        _release(docdb, collection, held)


def _release(docdb: DocDBResource, collection: str, leases: Sequence[Lease]) -> None:
    """Delete our lease documents in one request (best effort: a lease left behind expires)."""
    if leases:
        with contextlib.suppress(DocDBError):
            docdb.delete_many(collection, {"token": {"$in": [lease.token for lease in leases]}})
