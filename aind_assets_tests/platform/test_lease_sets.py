"""Leases held together (``hold_many``), on the real Mongo-wire server: one request to take the
free ones, the single-lease way for a held one, every lease checked, renewed and released."""

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from aind_assets.resources.docdb import DocDBResource, LeaseHeldError, LeaseLostError
from aind_assets.resources.lease_sets import hold_many

LEASES = "commits"
NAMES = [f"io/s3://b/out/p{i}" for i in range(5)]


def _held(docdb: DocDBResource) -> dict[str, str]:
    return {d["name"]: d["holder"] for d in docdb.find(LEASES, {})}


@contextlib.contextmanager
def _held_by_writer_b(docdb: DocDBResource, name: str) -> Iterator[None]:
    """``writer-b`` holds ``name`` (on a thread) for the ``with`` block, then releases it."""
    release = threading.Event()

    def other() -> None:
        with docdb.lease(name, "writer-b", collection=LEASES, ttl_s=120):
            release.wait(120)

    blocker = threading.Thread(target=other)
    blocker.start()
    while name not in _held(docdb):
        time.sleep(0.02)
    try:
        yield
    finally:
        release.set()
        blocker.join()


def _until_held(docdb: DocDBResource, expected: dict[str, str]) -> None:
    """Wait until the leases held are ``expected`` (a state the code under test must reach)."""
    deadline = time.monotonic() + 120  # a generous bound for a loaded machine, not a timing
    while _held(docdb) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _held(docdb) == expected


def test_free_names_are_taken_together_and_released(docdb: DocDBResource) -> None:
    with hold_many(docdb, NAMES, "writer-a", collection=LEASES, ttl_s=30, wait_s=0) as leases:
        assert _held(docdb) == dict.fromkeys(NAMES, "writer-a")
        leases.check()  # all held
        # nobody else can take one of them meanwhile
        with (
            pytest.raises(LeaseHeldError, match="held by writer-a"),
            docdb.lease(NAMES[2], "writer-b", collection=LEASES, ttl_s=30),
        ):
            pass
    assert _held(docdb) == {}


def test_a_name_held_elsewhere_is_waited_for(docdb: DocDBResource) -> None:
    released = threading.Event()

    def other() -> None:
        with docdb.lease(NAMES[1], "writer-b", collection=LEASES, ttl_s=30):
            released.wait(5)
            time.sleep(0.3)

    t = threading.Thread(target=other)
    t.start()
    while NAMES[1] not in _held(docdb):
        time.sleep(0.02)
    released.set()
    with hold_many(docdb, NAMES, "writer-a", collection=LEASES, ttl_s=30, wait_s=10):
        assert _held(docdb) == dict.fromkeys(NAMES, "writer-a")
    t.join()
    assert _held(docdb) == {}


def test_an_expired_lease_is_taken_over_and_a_live_one_is_refused(docdb: DocDBResource) -> None:
    past = datetime.now(UTC) - timedelta(seconds=5)
    docdb.insert_unique(
        LEASES, {"name": NAMES[0], "holder": "dead", "token": "t0", "expires_at": past}
    )
    with hold_many(docdb, NAMES[:2], "writer-a", collection=LEASES, ttl_s=30, wait_s=0):
        assert _held(docdb) == dict.fromkeys(NAMES[:2], "writer-a")
    future = datetime.now(UTC) + timedelta(seconds=60)
    docdb.insert_unique(
        LEASES, {"name": NAMES[3], "holder": "alive", "token": "t", "expires_at": future}
    )
    with (
        pytest.raises(LeaseHeldError, match="held by alive"),
        hold_many(docdb, NAMES, "writer-a", collection=LEASES, ttl_s=30, wait_s=0),
    ):
        pass
    # the names taken before the refusal were released: only the live holder's lease is left
    assert _held(docdb) == {NAMES[3]: "alive"}


def test_renewal_keeps_all_and_a_lost_lease_fails_the_check(docdb: DocDBResource) -> None:
    with hold_many(docdb, NAMES, "writer-a", collection=LEASES, ttl_s=30, wait_s=0) as leases:
        before = [lease.expires_at for lease in leases.leases]
        leases.renew()
        assert all(
            lease.expires_at is not None and old is not None and lease.expires_at > old
            for lease, old in zip(leases.leases, before, strict=True)
        )
        # one lease taken over behind our back (its document replaced): the check says so
        docdb.upsert(
            LEASES, {"name": NAMES[4]}, {"name": NAMES[4], "holder": "thief", "token": "x"}
        )
        leases.renew()
        with pytest.raises(LeaseLostError, match=NAMES[4]):
            leases.check()


def test_waiting_for_one_name_keeps_none_taken_out_of_order(docdb: DocDBResource) -> None:
    """A batch that finds a name held gives back what it took and takes the names in order:
    while it waits for the held one, the names after it stay free (two overlapping batches
    never hold what the other waits for in a cycle)."""
    done = threading.Event()

    def batch() -> None:
        with hold_many(docdb, NAMES, "writer-a", collection=LEASES, ttl_s=120, wait_s=120):
            done.set()

    with _held_by_writer_b(docdb, NAMES[2]):
        waiter = threading.Thread(target=batch)
        waiter.start()
        # first all free names are taken at once; then, finding p2 held, the batch gives them
        # back and takes them in order: p0 and p1 held, p3 and p4 free while it waits for p2
        _until_held(docdb, {NAMES[0]: "writer-a", NAMES[1]: "writer-a", NAMES[2]: "writer-b"})
    waiter.join()
    assert done.is_set() and _held(docdb) == {}


def test_leases_taken_before_a_long_wait_are_renewed_meanwhile(docdb: DocDBResource) -> None:
    """Taking names in order, the batch may wait for one longer than the time to live of those
    it already holds: the heartbeat renews them meanwhile, so none expires and is taken."""
    errors: list[BaseException] = []

    def batch() -> None:
        try:
            with hold_many(docdb, NAMES, "writer-a", collection=LEASES, ttl_s=2, wait_s=120) as ls:
                ls.check()  # every lease still ours
                assert _held(docdb) == dict.fromkeys(NAMES, "writer-a")
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)

    with _held_by_writer_b(docdb, NAMES[1]):
        waiter = threading.Thread(target=batch)
        waiter.start()
        _until_held(docdb, {NAMES[0]: "writer-a", NAMES[1]: "writer-b"})
        time.sleep(5)  # longer than the 2 s time to live of the lease on p0 (the point of it)
    waiter.join()
    assert errors == []
