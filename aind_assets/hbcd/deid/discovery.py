"""Session discovery on the identified side and the de-identification ledger (pure; no Dagster).

The identified ``assembly_bids`` listing is grouped into

* **sessions** ``sub-<DCCID>/ses-<label>/...``, each keyed by its partition key
  ``sub-<RC>_ses-<label>`` (release-candidate ID: the only subject label Dagster ever sees);
* **subject-level files** ``sub-<DCCID>/<anything not under ses-*>`` (``*_sessions.tsv``/``.json``),
  de-identified by a run of any one session of the subject;
* **dataset-level files**: everything not under ``sub-*`` (``participants.tsv``,
  ``dataset_description.json``, ``README``...), de-identified by the dataset asset;
* **sessionless subjects**: a subject folder without any ``ses-*`` folder (sessionless BIDS,
  ``sub-<DCCID>/anat/...``): its files have no session run, so the dataset asset de-identifies
  them too (they are part of the dataset unit's digest).

Nothing is dropped silently: what cannot be de-identified (type not in the allow-list, subject
missing from the map, colliding names) is listed by :mod:`~aind_assets.hbcd.deid.refused`.

Each unit has a *digest* of its listing (keys, sizes, ETags) and of :data:`RULES_VERSION`, so a
change in any file, or in the rules, changes the digest. Digests are truncated SHA-256 of
listings that include identifiers and ETags; they reveal nothing, and they are the only thing
about a session that leaves the identified side (in the sensor cursor, with the RC partition key).

The **ledger** records what has been de-identified: one empty-bodied object per session whose
*name* holds the digests (``<partition key>/<session digest>.<subject digest>``), written by the
session asset after all its outputs, so one listing tells the sensor and the daily schedule
which sessions are done. It lives on the identified side next to the discovery report.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import parse_session_partition_key, session_partition_key

__all__ = [
    "DATASET_UNIT",
    "EMPTY_DIGEST",
    "RULES_VERSION",
    "Discovery",
    "Ledger",
    "LedgerEntry",
    "RequestPlan",
    "SessionSource",
    "SourceObject",
    "dataset_digest",
    "digest_files",
    "discover",
    "ledger_name",
    "parse_ledger_names",
    "plan_requests",
]

#: Version of the de-identification rules. Bump it when a rule changes: every session's digest
#: changes, so every session is redone (and each object records the version it was made with).
RULES_VERSION = "2"
#: Digest recorded for a session that no longer exists in the source (its copy was removed).
EMPTY_DIGEST = "0" * 16
#: Ledger unit name of the dataset-level files.
DATASET_UNIT = "_dataset"

_SUB = re.compile(r"sub-([A-Za-z0-9]+)\Z")
_SES = re.compile(r"ses-([A-Za-z0-9]+)\Z")
_LEDGER = re.compile(r"(?P<unit>[^/]+)/(?P<ses>[0-9a-f]{16})\.(?P<sub>[0-9a-f]{16})\Z")


@dataclass(frozen=True)
class SourceObject:
    """One object of the identified ``assembly_bids`` tree; ``rel`` is relative to it."""

    rel: str
    size: int
    etag: str | None

    def __repr__(self) -> str:  # rel holds identifiers
        return f"SourceObject(<path hidden>, size={self.size})"

    __str__ = __repr__


def digest_files(files: Iterable[SourceObject], extra: str = "") -> str:
    """16 hex chars of SHA-256 over the sorted (key, size, ETag) triples and ``extra``."""
    h = hashlib.sha256(f"rules={RULES_VERSION};{extra}\n".encode())
    for f in sorted(files, key=lambda o: o.rel):
        h.update(f"{f.rel}\t{f.size}\t{f.etag or ''}\n".encode())
    return h.hexdigest()[:16]


def dataset_digest(
    dataset_files: Iterable[SourceObject], sessionless_files: Mapping[str, list[SourceObject]]
) -> str:
    """Digest of the dataset unit: dataset-level files and the sessionless subjects' files."""
    files = list(dataset_files)
    for group in sessionless_files.values():
        files.extend(group)
    return digest_files(files, DATASET_UNIT)


@dataclass
class SessionSource:
    partition_key: str
    rc_id: str
    session: str  # label without ``ses-``
    files: list[SourceObject] = field(default_factory=list, repr=False)
    digest: str = ""

    def __repr__(self) -> str:
        return f"SessionSource({self.partition_key}, files={len(self.files)})"


@dataclass
class Discovery:
    """What one scan of the identified side found (identifier-free except where noted)."""

    sessions: dict[str, SessionSource] = field(default_factory=dict)
    #: release-candidate ID -> digest of that subject's subject-level files
    subject_digests: dict[str, str] = field(default_factory=dict)
    #: release-candidate ID -> its session partition keys (sorted)
    subject_sessions: dict[str, list[str]] = field(default_factory=dict)
    dataset_files: list[SourceObject] = field(default_factory=list, repr=False)
    #: release-candidate ID -> files of a subject without any session folder (dataset unit)
    sessionless_files: dict[str, list[SourceObject]] = field(default_factory=dict, repr=False)
    dataset_digest: str = EMPTY_DIGEST
    #: identified subject folder names missing from the map: for the report on the identified
    #: side only (never put these in Dagster)
    unmapped_subject_folders: list[str] = field(default_factory=list, repr=False)

    @property
    def unmapped_subjects(self) -> int:
        return len(self.unmapped_subject_folders)

    def __repr__(self) -> str:
        return (
            f"Discovery(sessions={len(self.sessions)}, subjects={len(self.subject_digests)}, "
            f"unmapped_subjects={self.unmapped_subjects})"
        )


def discover(objects: Iterable[SourceObject], idmap: IdentityMap) -> Discovery:
    """Group an identified ``assembly_bids`` listing into sessions, subject- and dataset-level
    files (see module docstring). Subject folders whose label is not a DCCID of the map are
    counted, not processed."""
    out = Discovery()
    subject_files: dict[str, list[SourceObject]] = {}
    unmapped: set[str] = set()
    for obj in objects:
        parts = obj.rel.split("/")
        m = _SUB.match(parts[0]) if len(parts) > 1 else None
        if m is None:
            out.dataset_files.append(obj)
            continue
        row = idmap.by_dccid(m.group(1))
        if row is None:
            unmapped.add(parts[0])
            continue
        ses = _SES.match(parts[1]) if len(parts) > 2 else None
        if ses is None:
            subject_files.setdefault(row.rc_id, []).append(obj)
            continue
        key = session_partition_key(row.rc_id, ses.group(1))
        source = out.sessions.get(key)
        if source is None:
            source = out.sessions[key] = SessionSource(key, row.rc_id, ses.group(1))
        source.files.append(obj)
    for key, source in out.sessions.items():
        source.digest = digest_files(source.files, key)
        out.subject_sessions.setdefault(source.rc_id, []).append(key)
    for rc in set(subject_files) | set(out.subject_sessions):
        out.subject_digests[rc] = digest_files(subject_files.get(rc, []), f"subject {rc}")
    for keys in out.subject_sessions.values():
        keys.sort()
    out.sessionless_files = {
        rc: files for rc, files in sorted(subject_files.items()) if rc not in out.subject_sessions
    }
    out.dataset_digest = dataset_digest(out.dataset_files, out.sessionless_files)
    out.unmapped_subject_folders = sorted(unmapped)
    return out


# --- ledger ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    session_digest: str
    subject_digest: str


@dataclass
class Ledger:
    """Unit (partition key or :data:`DATASET_UNIT`) -> entry, from the ledger object names."""

    entries: dict[str, LedgerEntry] = field(default_factory=dict)
    #: names of superseded entries (several digests for one unit): safe to delete
    superseded: list[str] = field(default_factory=list)

    def get(self, unit: str) -> LedgerEntry | None:
        return self.entries.get(unit)


def ledger_name(unit: str, session_digest: str, subject_digest: str = EMPTY_DIGEST) -> str:
    """Name (relative to the ledger root) of the entry for a unit and its digests."""
    return f"{unit}/{session_digest}.{subject_digest}"


def parse_ledger_names(names: Iterable[tuple[str, float]]) -> Ledger:
    """Build the ledger from ``(relative name, last-modified timestamp)`` pairs; when a unit has
    several entries (an old one not yet deleted) the newest wins."""
    newest: dict[str, tuple[float, str, LedgerEntry]] = {}
    ledger = Ledger()
    for name, ts in names:
        m = _LEDGER.match(name)
        if m is None:
            continue
        entry = LedgerEntry(m["ses"], m["sub"])
        unit = m["unit"]
        old = newest.get(unit)
        if old is None or (ts, name) > (old[0], old[1]):
            if old is not None:
                ledger.superseded.append(old[1])
            newest[unit] = (ts, name, entry)
        else:
            ledger.superseded.append(name)
    ledger.entries = {unit: v[2] for unit, v in newest.items()}
    return ledger


# --- what to request ---------------------------------------------------------------------


@dataclass
class RequestPlan:
    """Partitions to (re-)run, all keyed by release-candidate IDs."""

    sessions: dict[str, str] = field(default_factory=dict)  # partition key -> unit digest
    dataset: str | None = None  # digest, when the dataset-level files must be redone
    removed: list[str] = field(default_factory=list)  # sessions gone from the source
    deferred: int = 0  # over the per-tick limit; picked up next time
    #: ledger sessions whose subject is no longer in the identity map (reported, not touched)
    orphaned: int = 0

    @property
    def empty(self) -> bool:
        return not self.sessions and self.dataset is None


def unit_digest(session_digest: str, subject_digest: str) -> str:
    return f"{session_digest}.{subject_digest}"


def plan_requests(
    discovery: Discovery,
    ledger: Ledger,
    idmap: IdentityMap,
    *,
    in_flight: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> RequestPlan:
    """Which sessions to de-identify: those whose digest differs from the ledger (new, changed,
    or removed from the source), skipping those already requested with the same digest
    (``in_flight``: unit -> digest, the sensor cursor). A subject whose subject-level files
    changed without any of its sessions changing gets one session run (its last session).
    ``limit`` caps the number of sessions (sorted by key; the rest is ``deferred``)."""
    in_flight = in_flight or {}
    plan = RequestPlan()
    wanted: dict[str, str] = {}
    for key, source in discovery.sessions.items():
        subject_digest = discovery.subject_digests.get(source.rc_id, EMPTY_DIGEST)
        entry = ledger.get(key)
        if entry is None or entry.session_digest != source.digest:
            wanted[key] = unit_digest(source.digest, subject_digest)
    for rc, keys in discovery.subject_sessions.items():
        current = discovery.subject_digests.get(rc, EMPTY_DIGEST)
        if any(k in wanted for k in keys):
            continue
        done = any((e := ledger.get(k)) is not None and e.subject_digest == current for k in keys)
        if not done:
            last = keys[-1]
            wanted[last] = unit_digest(discovery.sessions[last].digest, current)
    for key, entry in ledger.entries.items():
        if key == DATASET_UNIT or key in discovery.sessions:
            continue
        try:
            rc, _ = parse_session_partition_key(key)
        except ValueError:
            continue
        if not idmap.has_rc(rc):
            plan.orphaned += 1
        elif entry.session_digest != EMPTY_DIGEST:
            wanted[key] = unit_digest(EMPTY_DIGEST, EMPTY_DIGEST)
            plan.removed.append(key)
    keys = sorted(k for k, d in wanted.items() if in_flight.get(k) != d)
    if limit is not None and len(keys) > limit:
        plan.deferred = len(keys) - limit
        keys = keys[:limit]
    plan.sessions = {k: wanted[k] for k in keys}
    plan.removed = sorted(k for k in plan.removed if k in plan.sessions)
    entry = ledger.get(DATASET_UNIT)
    dataset_changed = entry is None or entry.session_digest != discovery.dataset_digest
    dataset_pending = in_flight.get(DATASET_UNIT) == discovery.dataset_digest
    has_dataset = bool(discovery.dataset_files or discovery.sessionless_files) or entry is not None
    if dataset_changed and not dataset_pending and has_dataset:
        plan.dataset = discovery.dataset_digest
    return plan
