"""The leak scan of the de-identified side on object storage (no Dagster; used by the blocking
``no_identifiers`` checks, the CLI and the benchmark).

What it reads: every object's name and content (:mod:`~aind_assets.hbcd.leaks.scan`), except
the voxel payload of a ``.nii.gz`` that de-identification recorded as written by the NIfTI-gz
path (user metadata ``deid-voxels: unchanged``: everything after its NIfTI header and
extensions is the source's voxel data, in gzip members with minimal headers). Of those only the
first bytes are read (gzip header, NIfTI header and extensions), one ranged GET.

Incremental: what was found clean is recorded on the identified side
(``.aind-assets/scanned/<unit>.json``: relative path -> ETag, with a digest of the identifier
set and :data:`SCANNER_VERSION`); the check reads only objects whose ETag is not recorded (new or
changed since, or every object when the map or the scanner changed). ``incremental=False``
scans everything. Two writers record: the check itself, and de-identification, which scans each
output with the same scanner as it writes it (:func:`refuse_leaking_output`: an output holding
an identifier is never written) and records it under the ETag the store reports for those very
bytes: computed from what it wrote (see :class:`OutputTap`; were the store to name the object
otherwise, the ETags differ and the check reads it), returned by the PUT of a small file, or
returned by a server-side copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aind_assets.hbcd.copies import META_VOXELS, VOXELS_UNCHANGED
from aind_assets.hbcd.deid.discovery import DATASET_UNIT
from aind_assets.hbcd.deid.plan import in_dataset_scope, in_session_scope, subjects_with_sessions
from aind_assets.hbcd.formats.base import DeidentificationError
from aind_assets.hbcd.identity.idmap import Identifiers, IdentityMap
from aind_assets.hbcd.identity.replace import parse_session_partition_key
from aind_assets.hbcd.identity.scrub import scrubbed_errors
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.leaks.scan import Finding, redact, scan_for_identifiers
from aind_assets.hbcd.storage import (
    STREAM_BLOCK,
    full_listing,
    map_concurrently,
    open_read,
    read_head,
    relpath_of,
)
from aind_assets.hbcd.streams import WritableBinary
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import ObjectInfo, join_url

#: Bump when the scanner learns to find more: every unit is scanned in full again.
SCANNER_VERSION = "2"
#: Bytes read of a ``.nii.gz`` with unchanged voxels (more only when its extensions need it);
#: objects up to this size are read whole in one request.
HEAD_BYTES = 64 << 10


@dataclass
class ScanResult:
    scanned: int = 0
    bytes_scanned: int = 0  # bytes read
    findings: list[Finding] = field(default_factory=list)
    leaking: list[str] = field(default_factory=list)  # URLs of objects with findings
    unchanged: int = 0  # not read: unchanged since a clean scan of the same unit
    voxels_skipped: int = 0  # NIfTI-gz read up to their voxel data only

    @property
    def clean(self) -> bool:
        return not self.findings

    def by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.findings).items()))


def _scan_one(
    store: ObjectStoreResource, info: ObjectInfo, rel: str, ids: Identifiers
) -> tuple[list[Finding], int, bool]:
    """(findings, bytes read, whether the voxel payload was skipped)."""
    if info.size <= HEAD_BYTES:  # small: one GET
        return scan_for_identifiers(rel, store.get_bytes(info.url), ids), info.size, False
    if rel.lower().endswith(".nii.gz"):
        head, meta = read_head(store, info, HEAD_BYTES)  # one ranged GET, metadata included
        if meta.get(META_VOXELS) == VOXELS_UNCHANGED:
            findings = scan_for_identifiers(rel, head, ids, voxels_unchanged=True)
            if not any(f.kind == "unscannable" for f in findings):
                return findings, len(head), True
            # the header and extensions go past the head: stream (still stopping at the voxels)
            with open_read(store, info.url, info.size) as f:
                findings = scan_for_identifiers(rel, f, ids, voxels_unchanged=True)
            return findings, info.size, True
    with open_read(store, info.url, info.size) as f:
        return scan_for_identifiers(rel, f, ids), info.size, False


def _scan_each(
    store: ObjectStoreResource, infos: list[ObjectInfo], root: str, ids: Identifiers
) -> list[tuple[list[Finding], int, bool]]:
    """(findings, bytes read, voxel payload skipped) of each object, concurrently."""

    def one(info: ObjectInfo) -> tuple[list[Finding], int, bool]:
        rel = relpath_of(info, root)
        try:
            return _scan_one(store, info, rel, ids)
        except Exception as e:  # noqa: BLE001 - an object that cannot be read cannot be cleared
            reason = f"unreadable ({type(e).__name__})"
            return [Finding(redact(rel, ids), reason, None, None, "unscannable")], 0, False

    return map_concurrently(store, one, infos)


def _add(result: ScanResult, info: ObjectInfo, scanned: tuple[list[Finding], int, bool]) -> None:
    findings, nbytes, skipped = scanned
    result.scanned += 1
    result.bytes_scanned += nbytes
    result.voxels_skipped += skipped
    if findings:
        result.findings.extend(findings)
        result.leaking.append(info.url)


def scan_objects(
    store: ObjectStoreResource, infos: list[ObjectInfo], root: str, idmap: IdentityMap
) -> ScanResult:
    """Scan names and contents (gzip and NIfTI headers included) of objects, concurrently."""
    result = ScanResult()
    for info, scanned in zip(
        infos, _scan_each(store, infos, root, idmap.identifiers()), strict=True
    ):
        _add(result, info, scanned)
    return result


def _identifiers_digest(ids: Identifiers) -> str:
    h = hashlib.sha256(SCANNER_VERSION.encode())
    for value in sorted(ids):
        h.update(f"\n{ids[value]}:{value}".encode())
    return h.hexdigest()


def _read_record(store: ObjectStoreResource, url: str, digest: str) -> dict[str, str]:
    with contextlib.suppress(FileNotFoundError, ValueError, OSError):
        body = json.loads(store.get_bytes(url))
        if body.get("identifiers") == digest:
            return {str(k): str(v) for k, v in body.get("objects", {}).items()}
    return {}


# --- scanning outputs as they are written --------------------------------------------------


def refuse_leaking_output(
    rel: str, data: bytes, ids: Identifiers, *, voxels_unchanged: bool = False
) -> bool:
    """Scan an output before it lands (``data``: the whole file, or the first bytes of a
    NIfTI-gz with ``voxels_unchanged``): an identifier raises (naming the kinds only). Returns
    whether the scan was complete (``False``: ``data`` ended before the NIfTI extensions did, or
    could not be parsed: the output must not be recorded as scanned; the check will read it)."""
    findings = scan_for_identifiers(rel, data, ids, voxels_unchanged=voxels_unchanged)
    leaks = sorted({f.kind for f in findings if f.kind != "unscannable"})
    if leaks:
        raise DeidentificationError(
            f"{redact(rel, ids)}: {', '.join(leaks)} left in the output, not written"
        )
    return not findings


class OutputTap:
    """A writer in front of an object-store upload: keeps the first :data:`HEAD_BYTES` written
    (for the scan) and the ETag the upload will get while it fits one part: the store's atomic
    writer always uploads in parts (one part below :data:`STREAM_BLOCK`), and S3 names such an
    object ``md5(md5(part)) + "-1"``."""

    def __init__(self, dst: WritableBinary):
        self.dst = dst
        self._head = bytearray()
        self._md5: Any = hashlib.md5()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        self.size += len(data)
        if self._md5 is not None:
            if self.size < STREAM_BLOCK:
                self._md5.update(data)
            else:
                self._md5 = None
        return self.dst.write(data)

    def flush(self) -> object:
        return self.dst.flush()

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    @property
    def etag(self) -> str | None:
        """The ETag of a one-part multipart upload of what was written (``None`` past a part)."""
        if self._md5 is None:
            return None
        return hashlib.md5(self._md5.digest()).hexdigest() + "-1"


def read_scanned(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap, unit: str
) -> dict[str, str]:
    """The unit's record of objects scanned clean (relative path -> ETag) for this map."""
    digest = _identifiers_digest(idmap.identifiers())
    return _read_record(store, layout.scan_record(unit), digest)


def record_scanned(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    unit: str,
    entries: Mapping[str, str | None],
    before: Mapping[str, str] | None = None,
) -> None:
    """Merge scan results of outputs into the unit's record (``None``: forget the entry);
    ``before``: the record as read (:func:`read_scanned`) when the caller has it already."""
    digest = _identifiers_digest(idmap.identifiers())
    url = layout.scan_record(unit)
    if before is None:
        before = _read_record(store, url, digest)
    objects = dict(before)
    for rel, etag in entries.items():
        if etag:
            objects[rel] = etag
        else:
            objects.pop(rel, None)
    if objects != before:
        body = {"identifiers": digest, "objects": dict(sorted(objects.items()))}
        store.put_bytes(url, json.dumps(body).encode())


# --- the check -----------------------------------------------------------------------------


def scan_unit(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    unit: str,
    lister: Callable[[], list[ObjectInfo]],
    *,
    incremental: bool = True,
) -> ScanResult:
    """Scan a unit's objects (``lister()``, under the de-identified ``assembly_bids``; listed
    while its record is read), skipping those recorded clean; record what is clean now."""
    if incremental:
        infos, before = map_concurrently(
            store, lambda f: f(), [lister, lambda: read_scanned(store, layout, idmap, unit)]
        )
    else:
        infos, before = lister(), {}
    return _scan_units(store, layout, idmap, {unit: infos}, {unit: before}, incremental)[unit]


def _scan_units(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    listed: Mapping[str, list[ObjectInfo]],
    before: Mapping[str, Mapping[str, str]],
    incremental: bool,
) -> dict[str, ScanResult]:
    """Scan the objects of several units (unit -> its objects; ``before``: unit -> its record)
    not recorded clean, each object once however many units hold it (a subject-level file
    belongs to every session of its subject); then write the records that changed, all
    concurrently. Each unit's result is what its own scan would report (an object read once
    for several units counts, with its findings, in each), so a batch reads like its sessions."""
    root = layout.deidentified_bids
    digest = _identifiers_digest(idmap.identifiers())
    todo: dict[str, list[ObjectInfo]] = {}
    distinct: dict[str, ObjectInfo] = {}
    for unit, infos in listed.items():
        known = before.get(unit, {}) if incremental else {}
        todo[unit] = [i for i in infos if not (i.etag and known.get(relpath_of(i, root)) == i.etag)]
        for i in todo[unit]:
            distinct.setdefault(i.url, i)
    objects = list(distinct.values())
    by_url = dict(
        zip(
            (i.url for i in objects),
            _scan_each(store, objects, root, idmap.identifiers()),
            strict=True,
        )
    )
    results: dict[str, ScanResult] = {}
    writes: list[tuple[str, bytes]] = []
    for unit, infos in listed.items():
        result = results[unit] = ScanResult(unchanged=len(infos) - len(todo[unit]))
        for info in todo[unit]:
            _add(result, info, by_url[info.url])
        leaking = set(result.leaking)
        clean = {relpath_of(i, root): i.etag for i in infos if i.etag and i.url not in leaking}
        if clean != before.get(unit, {}) or not incremental:
            body = {"identifiers": digest, "objects": dict(sorted(clean.items()))}
            writes.append((layout.scan_record(unit), json.dumps(body).encode()))
    map_concurrently(store, lambda w: store.put_bytes(*w), writes)
    return results


def scan_units(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    partition_keys: Sequence[str],
    *,
    dataset: bool = False,
    incremental: bool = True,
) -> dict[str, ScanResult]:
    """The leak checks of several sessions (and, with ``dataset``, of the dataset-level files,
    under :data:`DATASET_UNIT`) at once: each subject folder listed once (the whole tree once
    with ``dataset``), every record read in the same concurrent batch, each object read once.
    The same result per unit as :func:`scan_session` / :func:`scan_dataset`."""
    with scrubbed_errors(idmap, f"scanning {len(partition_keys)} session(s)"):
        root = layout.deidentified_bids
        scopes = {key: parse_session_partition_key(key) for key in partition_keys}
        units = list(scopes) + ([DATASET_UNIT] if dataset else [])
        subjects = sorted({join_url(root, f"sub-{rc}") for rc, _ in scopes.values()})

        def listing() -> list[ObjectInfo]:
            if dataset:
                return full_listing(store, root)
            listings = store.list_many(subjects, folder=True)
            return [i for infos in listings.values() for i in infos]

        def records() -> list[dict[str, str]]:
            if not incremental:
                return [{} for _ in units]
            return map_concurrently(store, lambda u: read_scanned(store, layout, idmap, u), units)

        infos, before = map_concurrently(store, lambda f: f(), [listing, records])
        rels = [relpath_of(i, root) for i in infos]
        listed: dict[str, list[ObjectInfo]] = {
            key: [i for i, rel in zip(infos, rels, strict=True) if in_session_scope(rel, rc, ses)]
            for key, (rc, ses) in scopes.items()
        }
        if dataset:
            listed[DATASET_UNIT] = _dataset_objects(infos, rels)
        recorded = dict(zip(units, before, strict=True))
        return _scan_units(store, layout, idmap, listed, recorded, incremental)


def _dataset_objects(infos: list[ObjectInfo], rels: list[str]) -> list[ObjectInfo]:
    """The dataset-level files and every subject folder without a session folder."""
    sessioned = subjects_with_sessions(rels)
    return [
        i
        for i, rel in zip(infos, rels, strict=True)
        if in_dataset_scope(rel) or rel.split("/", 1)[0] not in sessioned
    ]


def scan_session(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    partition_key: str,
    *,
    incremental: bool = True,
) -> ScanResult:
    """Every object of the de-identified session and its subject-level files."""
    with scrubbed_errors(idmap, f"scanning {partition_key}"):
        rc, ses = parse_session_partition_key(partition_key)
        root = layout.deidentified_bids

        def lister() -> list[ObjectInfo]:
            return [
                i
                for i in store.list_objects(join_url(root, f"sub-{rc}"), folder=True)
                if in_session_scope(relpath_of(i, root), rc, ses)
            ]

        return scan_unit(store, layout, idmap, partition_key, lister, incremental=incremental)


def scan_dataset(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    *,
    incremental: bool = True,
) -> ScanResult:
    """The dataset-level files and every subject folder without a session folder (sessionless
    BIDS), incrementally unless ``incremental`` is false."""
    with scrubbed_errors(idmap, "scanning the dataset-level files"):
        root = layout.deidentified_bids

        def lister() -> list[ObjectInfo]:
            infos = full_listing(store, root)
            return _dataset_objects(infos, [relpath_of(i, root) for i in infos])

        return scan_unit(store, layout, idmap, DATASET_UNIT, lister, incremental=incremental)
