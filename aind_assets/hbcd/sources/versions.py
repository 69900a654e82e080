"""Data versions of the identified sessions, from a listing alone (pure; no Dagster).

A session's version is a 16-hex SHA-256 over its objects' (key, size, ETag), sorted: any file
added, removed, resized or rewritten changes it, and computing it reads no object (one listing
of the identified ``assembly_bids`` serves every session). Unlike the de-identification ledger's
digests it leaves out the rules version: it describes the *data*; the rules are the
de-identified asset's code version. The keys hold identifiers, the digest does not reveal them
(the same truncated SHA-256 the discovery cursor already stores).

The de-identified session's own data version is derived from the source versions it consumed
and its code version (:func:`consumed_version`), so a de-identified session re-made from
changed data gets a new version and its derivatives show stale in turn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aind_assets.hbcd.deid.discovery import Discovery, SessionSource, SourceObject

__all__ = [
    "ABSENT",
    "UNOBSERVED",
    "Observation",
    "consumed_version",
    "current_observation",
    "listing_version",
    "observe",
]

#: Version of a session that was observed before and is gone from the identified side.
ABSENT = "absent"
#: Stands for a session never observed when a de-identified version is derived.
UNOBSERVED = "unobserved"


def listing_version(files: Iterable[SourceObject]) -> str:
    """16 hex chars of SHA-256 over the sorted (key, size, ETag) triples of one session."""
    h = hashlib.sha256(b"identified-session-v1\n")
    for f in sorted(files, key=lambda o: o.rel):
        h.update(f"{f.rel}\t{f.size}\t{f.etag or ''}\n".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Observation:
    """What to report for one session partition (identifier-free)."""

    partition_key: str
    version: str
    files: int
    bytes: int


def current_observation(key: str, source: SessionSource) -> Observation:
    """The observation of one session as it is listed now."""
    return Observation(
        key, listing_version(source.files), len(source.files), sum(f.size for f in source.files)
    )


def observe(
    discovery: Discovery,
    previous: Mapping[str, str],
    registered: Iterable[str],
    done: Mapping[str, str] | None = None,
) -> tuple[list[Observation], dict[str, str]]:
    """The sessions whose version differs from ``previous`` (partition key -> version last
    reported), restricted to ``registered`` partitions; a session reported before and now gone
    is reported :data:`ABSENT`. Returns the observations and the new ``previous`` state.

    Only changes are reported, so an unchanged tree costs one listing and no event; a lost
    state re-reports every session with its unchanged version, which makes nothing stale.

    ``done`` (partition key -> the ledger's session digest) says which sessions were
    de-identified from exactly their current files. Such a session seen for the first time is
    recorded without an observation: Dagster would take a first observation arriving after the
    de-identification for a change and show the session Unsynced, though nothing changed.
    """
    done = done or {}
    known = set(registered)
    state = {k: v for k, v in previous.items() if k in known}
    out: list[Observation] = []
    for key in sorted(known):
        source = discovery.sessions.get(key)
        if source is not None:
            now = current_observation(key, source)
            version, files, size = now.version, now.files, now.bytes
            if key not in state and done.get(key) == source.digest:
                state[key] = version
                continue
        elif key in state and state[key] != ABSENT:
            version, files, size = ABSENT, 0, 0
        else:
            continue
        if state.get(key) != version:
            out.append(Observation(key, version, files, size))
            state[key] = version
    return out, state


def consumed_version(source_versions: Mapping[str, str | None], code_version: str | None) -> str:
    """Data version of a de-identified output made from these source versions (partition key
    -> version, ``None`` if never observed) with this code version."""
    h = hashlib.sha256(f"deidentified-v1;code={code_version or ''}\n".encode())
    for key, version in sorted(source_versions.items()):
        h.update(f"{key}\t{version or UNOBSERVED}\n".encode())
    return h.hexdigest()[:16]
