"""The commit protocol of a de-identified session (no Dagster).

A session's de-identified files are rewritten in place (each object atomically), so a run that
stops halfway leaves a mix of new and old files. To keep such a session from being consumed,
its write starts with a *writing marker* on the de-identified side,
``<de-identified root>/.aind-assets/writing/<sub-RC_ses-label>.json`` (identifier-free: the
partition key and a time), before any file changes; the marker is removed only by the session's
leak check when it passed on the materialization of the same run, i.e. after the files, the
ledger entry and the IO manager's value and record were all written. A marker present means the
session is being written or a run stopped halfway: readers (processing, release selection and
staging) refuse it, naming it, and discovery treats it as not de-identified, so the next
(scheduled) run redoes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aind_assets.resources.urls import join_url

if TYPE_CHECKING:
    from aind_assets.resources.object_store import ObjectStoreResource

#: Where the markers live, relative to the de-identified root (outside ``assembly_bids`` and
#: ``derivatives``: no BIDS listing, sync or release sees them).
WRITING = ".aind-assets/writing"
SUFFIX = ".json"


class SessionNotCommittedError(RuntimeError):
    """A reader met sessions whose latest de-identification did not complete."""

    def __init__(self, units: Iterable[str], what: str):
        self.units = sorted(set(units))
        shown = ", ".join(self.units[:20]) + (" ..." if len(self.units) > 20 else "")
        super().__init__(
            f"{what}: the de-identification of {len(self.units)} session(s) did not complete "
            f"(a run is writing them or stopped halfway; their {WRITING}/ marker is still "
            f"there): {shown}. Re-materialize hbcd/deidentified_session for them (with its leak "
            "check) first."
        )


def marker_url(deid_root: str, unit: str) -> str:
    return join_url(deid_root, WRITING, f"{unit}{SUFFIX}")


def begin_session_write(store: ObjectStoreResource, deid_root: str, unit: str) -> None:
    """Mark ``unit`` as being written (call before the first change to its files)."""
    body = {"unit": unit, "started_at": datetime.now(UTC).isoformat()}
    store.put_bytes(marker_url(deid_root, unit), json.dumps(body).encode())


def commit_session_write(store: ObjectStoreResource, deid_root: str, unit: str) -> None:
    """Mark ``unit`` as complete (the last step of its write: after its leak check passed)."""
    store.delete(marker_url(deid_root, unit))


def sessions_being_written(store: ObjectStoreResource, deid_root: str) -> set[str]:
    """Units whose writing marker is present."""
    root = join_url(deid_root, WRITING)
    return {
        name.removesuffix(SUFFIX)
        for i in store.list_objects(root, folder=True)
        if (name := i.url.rsplit("/", 1)[-1]).endswith(SUFFIX)
    }


def subject_of(unit: str) -> str:
    """``sub-<RC>`` of a session partition key ``sub-<RC>_ses-<label>``."""
    return unit.split("_ses-", 1)[0]


def require_committed(
    store: ObjectStoreResource, deid_root: str, units: Iterable[str], what: str
) -> None:
    """Raise :class:`SessionNotCommittedError` naming the sessions being written among
    ``units`` and the other sessions of their subjects (they share the subject-level files)."""
    wanted = set(units)
    subjects = {subject_of(u) for u in wanted}
    blocking = {
        d
        for d in sessions_being_written(store, deid_root)
        if d in wanted or subject_of(d) in subjects
    }
    if blocking:
        raise SessionNotCommittedError(blocking, what)
