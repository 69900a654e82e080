"""The leak scan of the de-identified side on object storage (no Dagster; used by the blocking
``no_identifiers`` checks, the CLI and the benchmark).

What it reads: every object's name and content (:mod:`~aind_assets.hbcd.leaks.scan`), except
the voxel payload of a ``.nii.gz`` that de-identification recorded as written by the NIfTI-gz
path (user metadata ``deid-voxels: unchanged``: everything after its NIfTI header and
extensions is the source's voxel data, in gzip members with minimal headers). Of those only the
first bytes are read (gzip header, NIfTI header and extensions), one ranged GET.

Incremental: what a unit's scan found clean is recorded on the identified side
(``.aind-assets/scanned/<unit>.json``: relative path -> ETag, with a digest of the identifier
set and :data:`SCANNER_VERSION`); the next scan of the unit reads only objects that are new or
changed since (or every object, when the map or the scanner changed). ``incremental=False``
scans everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

from aind_assets.hbcd.copies import META_VOXELS, VOXELS_UNCHANGED
from aind_assets.hbcd.deid.discovery import DATASET_UNIT
from aind_assets.hbcd.deid.plan import in_session_scope
from aind_assets.hbcd.identity.idmap import Identifiers, IdentityMap
from aind_assets.hbcd.identity.replace import parse_session_partition_key
from aind_assets.hbcd.identity.scrub import scrubbed_errors
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.leaks.scan import Finding, redact, scan_for_identifiers
from aind_assets.hbcd.storage import (
    STREAM_BLOCK,
    list_children,
    map_concurrently,
    object_metadata,
    read_head,
    relpath_of,
)
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import ObjectInfo, join_url

#: Bump when the scanner learns to find more: every unit is scanned in full again.
SCANNER_VERSION = "2"
#: Bytes read of a ``.nii.gz`` with unchanged voxels (more only when its extensions need it).
HEAD_BYTES = 256 << 10


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
    if (
        rel.lower().endswith(".nii.gz")
        and info.size > HEAD_BYTES
        and object_metadata(store, info).get(META_VOXELS) == VOXELS_UNCHANGED
    ):
        head = read_head(store, info.url, HEAD_BYTES)
        findings = scan_for_identifiers(rel, head, ids, voxels_unchanged=True)
        if not any(f.kind == "unscannable" for f in findings):
            return findings, len(head), True
        # the header and extensions go past the head: stream (still stopping at the voxels)
        with store.open(info.url, "rb", block_size=STREAM_BLOCK) as f:
            findings = scan_for_identifiers(rel, f, ids, voxels_unchanged=True)
        return findings, info.size, True
    with store.open(info.url, "rb", block_size=STREAM_BLOCK) as f:
        return scan_for_identifiers(rel, f, ids), info.size, False


def scan_objects(
    store: ObjectStoreResource, infos: list[ObjectInfo], root: str, idmap: IdentityMap
) -> ScanResult:
    """Scan names and contents (gzip and NIfTI headers included) of objects, concurrently."""
    ids = idmap.identifiers()

    def one(info: ObjectInfo) -> tuple[list[Finding], int, bool]:
        rel = relpath_of(info, root)
        try:
            return _scan_one(store, info, rel, ids)
        except Exception as e:  # noqa: BLE001 - an object that cannot be read cannot be cleared
            reason = f"unreadable ({type(e).__name__})"
            return [Finding(redact(rel, ids), reason, None, None, "unscannable")], 0, False

    result = ScanResult()
    for info, (findings, nbytes, skipped) in zip(
        infos, map_concurrently(store, one, infos), strict=True
    ):
        result.scanned += 1
        result.bytes_scanned += nbytes
        result.voxels_skipped += skipped
        if findings:
            result.findings.extend(findings)
            result.leaking.append(info.url)
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


def scan_unit(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    unit: str,
    infos: list[ObjectInfo],
    *,
    incremental: bool = True,
) -> ScanResult:
    """Scan a unit's objects (relative to the de-identified ``assembly_bids``), skipping those
    unchanged since its last clean scan; record what is clean now."""
    root = layout.deidentified_bids
    digest = _identifiers_digest(idmap.identifiers())
    url = layout.scan_record(unit)
    before = _read_record(store, url, digest) if incremental else {}
    todo = [i for i in infos if not (i.etag and before.get(relpath_of(i, root)) == i.etag)]
    result = scan_objects(store, todo, root, idmap)
    result.unchanged = len(infos) - len(todo)
    leaking = set(result.leaking)
    clean = {relpath_of(i, root): i.etag for i in infos if i.etag and i.url not in leaking}
    if clean != before or not incremental:
        body = {"identifiers": digest, "objects": dict(sorted(clean.items()))}
        store.put_bytes(url, json.dumps(body).encode())
    return result


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
        infos = [
            i
            for i in store.list_objects(join_url(root, f"sub-{rc}"))
            if in_session_scope(relpath_of(i, root), rc, ses)
        ]
        return scan_unit(store, layout, idmap, partition_key, infos, incremental=incremental)


def scan_dataset(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    *,
    incremental: bool = True,
) -> ScanResult:
    with scrubbed_errors(idmap, "scanning the dataset-level files"):
        root = layout.deidentified_bids
        files, dirs = list_children(store, root)
        top = [d for d in dirs if not d.rsplit("/", 1)[-1].startswith("sub-")]
        for infos in store.list_many(top).values():
            files.extend(infos)
        return scan_unit(store, layout, idmap, DATASET_UNIT, files, incremental=incremental)
