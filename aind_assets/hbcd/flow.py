"""The HBCD flow's work on object storage (no Dagster APIs: usable from Dagster, the CLI and the
benchmark). Decisions are made by the pure modules (:mod:`~aind_assets.hbcd.discovery`,
:mod:`~aind_assets.hbcd.sync`, :mod:`~aind_assets.hbcd.staleness`, ...); this module lists,
streams, writes and deletes.

Layout (every path is relative to a side's root)::

    identified root                              de-identified root
      assembly_bids/sub-<DCCID>/ses-<label>/...    assembly_bids/sub-<RC>/ses-<label>/...
      assembly_bids/participants.tsv ...           assembly_bids/participants.tsv ...
      derivatives/ses-<label>/<pipeline>/          derivatives/ses-<label>/<pipeline>/
          sub-<DCCID>/ses-<label>/...                  sub-<RC>/ses-<label>/...
      derivatives/ses-<label>/cbrain_misc/         derivatives/ses-<label>/cbrain_misc/
          sub-<DCCID>_<pipeline>_ses-<label>.json      sub-<RC>_<pipeline>_ses-<label>.json
      identifiers/release_identifiers.csv
      .aind-assets/ledger/<partition>/<digests>    (identified side only: what was de-identified)
      .aind-assets/discovery/report.json           (identified side only: last scan, unmapped)
      .aind-assets/reidentified/ledger.json.gz     (identified side only)

Privacy: errors raised from here are :class:`HbcdError` whose messages went through
:class:`Scrubber` (every identifier replaced, as a substring, by its kind); exceptions from
storage clients (which quote identified keys) never propagate with their text.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aind_assets.hbcd.bids import (
    DeidentificationError,
    UnsupportedFileType,
    deidentify_file,
    reidentify_file,
)
from aind_assets.hbcd.derivatives import (
    DerivativeManifest,
    ManifestEntry,
    manifest_relpath,
    parse_manifest_relpath,
)
from aind_assets.hbcd.discovery import (
    DATASET_UNIT,
    EMPTY_DIGEST,
    RULES_VERSION,
    Discovery,
    Ledger,
    SourceObject,
    digest_files,
    discover,
    ledger_name,
    parse_ledger_names,
)
from aind_assets.hbcd.idmap import IdentityMap
from aind_assets.hbcd.ids import (
    UnmappedIdentifierError,
    deidentify_path,
    parse_session_partition_key,
)
from aind_assets.hbcd.imagestats import (
    PIPELINE,
    ImageStatsError,
    dataset_description,
    image_stats,
    is_image,
    qc_table,
    stats_relpath,
)
from aind_assets.hbcd.leaks import Finding, redact, scan_for_identifiers
from aind_assets.hbcd.staleness import BIDS_FOLDER, Staleness, staleness
from aind_assets.hbcd.sync import (
    META_DEID_RULES,
    META_SOURCE_ETAG,
    META_SOURCE_LAST_MODIFIED,
    DestObject,
    ReidLedgerEntry,
    SessionPlan,
    Write,
    in_dataset_scope,
    in_session_scope,
    iso,
    plan_reidentify,
    plan_session_sync,
    plan_sync,
    reidentify_content,
    verified_unchanged,
)
from aind_assets.resources.object_store import ObjectInfo, ObjectStoreResource, is_s3, join_url

__all__ = [
    "BIDS",
    "DERIVATIVES",
    "HbcdError",
    "HbcdLayout",
    "Scrubber",
    "deidentify_dataset",
    "deidentify_session",
    "discover_sessions",
    "process_session",
    "reidentify_derivatives",
    "scan_dataset",
    "scan_session",
]

BIDS = BIDS_FOLDER
DERIVATIVES = "derivatives"
STATE = ".aind-assets"
CBRAIN_MISC = "cbrain_misc"
_S3_SERVER_COPY_LIMIT = 5 * 2**30


class HbcdError(RuntimeError):
    """A failure of the HBCD flow; the message holds no identifier."""


# --- privacy: scrub identifiers out of any text -------------------------------------------


class Scrubber:
    """Replaces every DCCID, PSCID and site ID *as a substring* (case-insensitive) with
    ``<DCCID>``/``<PSCID>``/``<site>``. Over-redaction is harmless in error messages; missing
    an identifier embedded in a longer token (``%2F123456``) is not. The pattern is compiled
    on first use and cached per identity map."""

    _compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, idmap: IdentityMap | None) -> None:
        self._idmap = idmap

    def _pattern(self) -> tuple[re.Pattern | None, dict[str, str]]:
        if self._idmap is None:
            return None, {}
        cached = Scrubber._compiled.get(self._idmap)
        if cached is None:
            kinds = dict(self._idmap.identifiers().items())
            values = sorted(kinds, key=len, reverse=True)
            pattern = (
                re.compile("|".join(re.escape(v) for v in values), re.IGNORECASE)
                if values
                else None
            )
            cached = Scrubber._compiled[self._idmap] = (pattern, kinds)
        return cached

    def __call__(self, text: str) -> str:
        pattern, kinds = self._pattern()
        if pattern is None:
            return text
        return pattern.sub(lambda m: f"<{kinds[m.group().casefold()]}>", text)

    def __repr__(self) -> str:
        return "Scrubber(<values hidden>)"


@contextlib.contextmanager
def scrubbed_errors(idmap: IdentityMap | None, what: str) -> Iterator[None]:
    """Re-raise any exception as :class:`HbcdError` with a scrubbed message and no chained
    exception (whose text could quote an identified key)."""
    try:
        yield
    except HbcdError as e:
        raise HbcdError(Scrubber(idmap)(str(e))) from None
    except Exception as e:  # noqa: BLE001 - every foreign error is re-raised, scrubbed
        raise HbcdError(f"{what}: {type(e).__name__}: {Scrubber(idmap)(str(e))}") from None


def _reason(e: BaseException, scrub: Scrubber) -> str:
    if isinstance(e, DeidentificationError | UnsupportedFileType | ImageStatsError | HbcdError):
        return scrub(str(e))
    if isinstance(e, UnmappedIdentifierError):
        return "names a subject missing from the identity map"
    return f"{type(e).__name__}: {scrub(str(e))}"


# --- layout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HbcdLayout:
    identified_root: str
    deidentified_root: str

    @property
    def identified_bids(self) -> str:
        return join_url(self.identified_root, BIDS)

    @property
    def deidentified_bids(self) -> str:
        return join_url(self.deidentified_root, BIDS)

    @property
    def deidentified_derivatives(self) -> str:
        return join_url(self.deidentified_root, DERIVATIVES)

    @property
    def identified_derivatives(self) -> str:
        return join_url(self.identified_root, DERIVATIVES)

    @property
    def ledger_root(self) -> str:
        return join_url(self.identified_root, STATE, "ledger")

    @property
    def discovery_report(self) -> str:
        return join_url(self.identified_root, STATE, "discovery", "report.json")

    @property
    def reid_ledger(self) -> str:
        return join_url(self.identified_root, STATE, "reidentified", "ledger.json.gz")

    def session_urls(self, partition_key: str, idmap: IdentityMap) -> tuple[str, str, str, str]:
        """(rc, session label, identified subject folder, de-identified subject folder)."""
        rc, ses = parse_session_partition_key(partition_key)
        row = idmap.by_rc(rc)
        if row is None:
            raise HbcdError(
                f"partition {partition_key}: its release-candidate ID is not in the identity map"
            )
        return (
            rc,
            ses,
            join_url(self.identified_bids, f"sub-{row.dccid}"),
            join_url(self.deidentified_bids, f"sub-{rc}"),
        )

    def derivative_folder(self, rc: str, ses: str, pipeline: str) -> str:
        return join_url(self.deidentified_derivatives, f"ses-{ses}", pipeline, f"sub-{rc}")

    def manifest_url(self, rc: str, ses: str, pipeline: str) -> str:
        return join_url(self.deidentified_derivatives, manifest_relpath(rc, pipeline, ses))


# --- storage helpers ---------------------------------------------------------------------


def _rel(info: ObjectInfo, prefix: str) -> str:
    return info.relative_to(prefix)


def list_children(store: ObjectStoreResource, url: str) -> tuple[list[ObjectInfo], list[str]]:
    """One level below ``url``: (files, folder URLs)."""
    fs = store.fs_for(url)
    path = url[len("s3://") :] if is_s3(url) else os.path.abspath(url)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return [], []
    files, dirs = [], []
    for raw in entries:
        name = raw["name"].rstrip("/")
        if name == path.rstrip("/"):
            continue
        full = f"s3://{name}" if is_s3(url) else name
        if raw.get("type") == "directory":
            dirs.append(full)
        else:
            files.append(store._info(url, raw))  # noqa: SLF001 - same conversion as list()
    return files, dirs


def object_metadata(store: ObjectStoreResource, info: ObjectInfo) -> dict[str, str]:
    """User metadata of an object: from the listing (local xattrs) or a HEAD request (S3)."""
    if not is_s3(info.url):
        return dict(info.metadata)
    fs = store.fs_for(info.url)
    try:
        meta = fs.metadata(info.url[len("s3://") :])
    except FileNotFoundError:
        return {}
    return {str(k).lower(): str(v) for k, v in meta.items()}


def _map(store: ObjectStoreResource, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return store.map_concurrently(fn, list(items))


# --- discovery ---------------------------------------------------------------------------


def list_identified_bids(store: ObjectStoreResource, layout: HbcdLayout) -> list[SourceObject]:
    """The identified ``assembly_bids`` listing: top-level entries, then every folder listed
    concurrently (one request stream per subject)."""
    root = layout.identified_bids
    files, dirs = list_children(store, root)
    out = [SourceObject(_rel(i, root), i.size, i.etag) for i in files]
    for infos in store.list_many(dirs).values():
        out.extend(SourceObject(_rel(i, root), i.size, i.etag) for i in infos)
    return out


def read_ledger(store: ObjectStoreResource, layout: HbcdLayout) -> Ledger:
    root = layout.ledger_root
    infos = store.list_objects(root)
    return parse_ledger_names((_rel(i, root), i.last_modified.timestamp()) for i in infos)


def write_ledger_entry(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    unit: str,
    session_digest: str,
    subject_digest: str,
    body: dict[str, Any],
) -> None:
    """Record a unit as done (after all its outputs), then drop its older entries."""
    name = ledger_name(unit, session_digest, subject_digest)
    url = join_url(layout.ledger_root, name)
    store.put_bytes(url, json.dumps(body, indent=1).encode())
    old = [i.url for i in store.list_objects(join_url(layout.ledger_root, unit)) if i.url != url]
    if old:
        store.delete(old)


def forget_ledger_entry(store: ObjectStoreResource, layout: HbcdLayout, unit: str) -> None:
    """Mark a unit as not done (e.g. its leak check failed), so the daily schedule redoes it."""
    store.delete([i.url for i in store.list_objects(join_url(layout.ledger_root, unit))])


@dataclass
class DiscoveryResult:
    discovery: Discovery
    ledger: Ledger


def discover_sessions(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap
) -> DiscoveryResult:
    """Scan the identified side and read the ledger (both concurrently)."""
    objects, ledger = _map(
        store,
        lambda f: f(),
        [lambda: list_identified_bids(store, layout), lambda: read_ledger(store, layout)],
    )
    return DiscoveryResult(discover(objects, idmap), ledger)


def write_discovery_report(
    store: ObjectStoreResource, layout: HbcdLayout, result: DiscoveryResult
) -> bool:
    """Write the identified-side report (sessions found, unmapped subject folders by name, for
    the operators who maintain the map) when it changed. Returns whether it was written."""
    d = result.discovery
    body = {
        "sessions": len(d.sessions),
        "subjects": len(d.subject_digests),
        "dataset_files": len(d.dataset_files),
        "unmapped_subject_folders": d.unmapped_subject_folders,
        "digest": digest_files(
            [SourceObject(k, 0, s.digest) for k, s in d.sessions.items()],
            d.dataset_digest + ",".join(d.unmapped_subject_folders),
        ),
    }
    url = layout.discovery_report
    with contextlib.suppress(FileNotFoundError, ValueError):
        if json.loads(store.get_bytes(url)).get("digest") == body["digest"]:
            return False
    body["written_at"] = datetime.now(UTC).isoformat()
    store.put_bytes(url, json.dumps(body, indent=1).encode())
    return True


# --- de-identification -------------------------------------------------------------------


@dataclass
class SyncResult:
    """What a session (or dataset-level) run did; every path is a de-identified one."""

    unit: str
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    collisions: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    digest: str = EMPTY_DIGEST
    source_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.collisions


def _existing_with_metadata(
    store: ObjectStoreResource,
    infos: list[ObjectInfo],
    prefix: str,
    wanted: set[str],
) -> list[DestObject]:
    """De-identified objects with their metadata (HEAD only those a source might match)."""

    def one(info: ObjectInfo) -> DestObject:
        rel = _rel(info, prefix)
        meta = object_metadata(store, info) if rel in wanted else {}
        return DestObject(rel, info.size, info.etag, info.last_modified, meta)

    return _map(store, one, infos)


def _execute_sync(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    plan: SessionPlan,
    sources: dict[str, SourceObject],
    result: SyncResult,
) -> None:
    src_root, dst_root = layout.identified_bids, layout.deidentified_bids
    scrub = Scrubber(idmap)
    notes: Counter[str] = Counter()

    def write(w: Write) -> tuple[Write, str | None, list[str]]:
        src_url, dst_url = join_url(src_root, w.src), join_url(dst_root, w.dst)
        meta = {META_SOURCE_ETAG: w.etag or "", META_DEID_RULES: RULES_VERSION}
        file_notes: list[str] = []
        try:
            with (
                store.open(src_url, "rb") as src,
                store.open(dst_url, "wb", meta) as dst,
            ):
                deidentify_file(w.src, src, dst, idmap, notes=file_notes)
        except Exception as e:  # noqa: BLE001 - reported per file, scrubbed
            return w, _reason(e, scrub), file_notes
        return w, None, file_notes

    for w, error, file_notes in _map(store, write, plan.write):
        if error is None:
            result.written.append(w.dst)
            result.bytes_read += sources[w.src].size
            notes.update(file_notes)
        else:
            result.failed[w.dst] = error
    # stale copies of files that failed must not stay as if current; orphans go too
    doomed = sorted(set(plan.delete) | set(result.failed) | set(plan.collisions))
    if doomed:
        store.delete([join_url(dst_root, rel) for rel in doomed])
    result.deleted = sorted(set(plan.delete))
    result.unchanged = len(plan.unchanged)
    result.unsupported = plan.unsupported
    result.unmapped = plan.unmapped
    result.collisions = plan.collisions
    result.notes = dict(sorted(notes.items()))


def deidentify_session(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap, partition_key: str
) -> SyncResult:
    """Bring ``sub-<RC>/ses-<label>/`` and the subject-level files on the de-identified side in
    line with the identified source: write new and changed files, delete what the source no
    longer has, leave the rest. Records the ledger entry last, and only if nothing failed."""
    with scrubbed_errors(idmap, f"de-identifying {partition_key}"):
        rc, ses, src_subject, dst_subject = layout.session_urls(partition_key, idmap)
        listings = store.list_many([src_subject, dst_subject])
        src_root = layout.identified_bids
        all_sources = [
            SourceObject(_rel(i, src_root), i.size, i.etag) for i in listings[src_subject]
        ]
        found = discover(all_sources, idmap)
        session = found.sessions.get(partition_key)
        subject_digest = found.subject_digests.get(rc, EMPTY_DIGEST)
        sources = [
            s
            for s in all_sources
            if s.rel.split("/")[1] == f"ses-{ses}" or not s.rel.split("/")[1].startswith("ses-")
        ]
        if session is None:  # the session is gone from the source: remove its copy
            sources = [s for s in sources if not s.rel.split("/")[1].startswith("ses-")]
            if not found.sessions:  # and the subject has no session left
                sources = []
        src_by_rel = {s.rel: s for s in sources}
        wanted = set()
        for s in sources:
            with contextlib.suppress(UnmappedIdentifierError):
                wanted.add(deidentify_path(s.rel, idmap))
        dst_root = layout.deidentified_bids
        existing = _existing_with_metadata(store, listings[dst_subject], dst_root, wanted)
        plan = plan_session_sync(sources, existing, idmap, rc_id=rc, session=ses)
        result = SyncResult(partition_key, source_files=len(sources))
        _execute_sync(store, layout, idmap, plan, src_by_rel, result)
        result.digest = session.digest if session is not None else EMPTY_DIGEST
        if result.ok:
            write_ledger_entry(
                store,
                layout,
                partition_key,
                result.digest,
                subject_digest if session is not None else EMPTY_DIGEST,
                {
                    "unit": partition_key,
                    "rules_version": RULES_VERSION,
                    "files": [
                        {"Key": s.rel, "Size": s.size, "ETag": s.etag}
                        for s in sorted(sources, key=lambda s: s.rel)
                    ],
                    "outputs": plan.expected,
                    "written_at": datetime.now(UTC).isoformat(),
                },
            )
        return result


def deidentify_dataset(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap
) -> SyncResult:
    """The dataset-level files (``participants.tsv`` with rows of unmapped subjects dropped,
    ``participants.json``, ``dataset_description.json``, ``README``...)."""
    with scrubbed_errors(idmap, "de-identifying the dataset-level files"):
        src_root, dst_root = layout.identified_bids, layout.deidentified_bids

        def side(root: str) -> list[ObjectInfo]:
            files, dirs = list_children(store, root)
            top = [d for d in dirs if not d.rsplit("/", 1)[-1].startswith("sub-")]
            for infos in store.list_many(top).values():
                files.extend(infos)
            return files

        src_infos, dst_infos = _map(store, side, [src_root, dst_root])
        sources = [SourceObject(_rel(i, src_root), i.size, i.etag) for i in src_infos]
        wanted = set()
        for s in sources:
            with contextlib.suppress(UnmappedIdentifierError):
                wanted.add(deidentify_path(s.rel, idmap))
        existing = _existing_with_metadata(store, dst_infos, dst_root, wanted)
        plan = plan_sync(sources, existing, idmap, in_dataset_scope)
        result = SyncResult(DATASET_UNIT, source_files=len(sources))
        _execute_sync(store, layout, idmap, plan, {s.rel: s for s in sources}, result)
        result.digest = digest_files(sources, DATASET_UNIT)
        if result.ok:
            write_ledger_entry(
                store,
                layout,
                DATASET_UNIT,
                result.digest,
                EMPTY_DIGEST,
                {"unit": DATASET_UNIT, "outputs": plan.expected},
            )
        return result


# --- leak scanning -----------------------------------------------------------------------


@dataclass
class ScanResult:
    scanned: int = 0
    bytes_scanned: int = 0
    findings: list[Finding] = field(default_factory=list)
    leaking: list[str] = field(default_factory=list)  # URLs of objects with findings

    @property
    def clean(self) -> bool:
        return not self.findings

    def by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.findings).items()))


def scan_objects(
    store: ObjectStoreResource, infos: list[ObjectInfo], root: str, idmap: IdentityMap
) -> ScanResult:
    """Scan names and contents (gzip and NIfTI headers included) of objects, concurrently."""
    ids = idmap.identifiers()

    def one(info: ObjectInfo) -> list[Finding]:
        rel = _rel(info, root)
        try:
            with store.open(info.url, "rb") as f:
                return scan_for_identifiers(rel, f, ids)
        except Exception as e:  # noqa: BLE001 - an object that cannot be read cannot be cleared
            return [
                Finding(
                    redact(rel, ids), f"unreadable ({type(e).__name__})", None, None, "unscannable"
                )
            ]

    result = ScanResult()
    for info, findings in zip(infos, _map(store, one, infos), strict=True):
        result.scanned += 1
        result.bytes_scanned += info.size
        if findings:
            result.findings.extend(findings)
            result.leaking.append(info.url)
    return result


def scan_session(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap, partition_key: str
) -> ScanResult:
    """Every object of the de-identified session and its subject-level files."""
    with scrubbed_errors(idmap, f"scanning {partition_key}"):
        rc, ses = parse_session_partition_key(partition_key)
        root = layout.deidentified_bids
        infos = [
            i
            for i in store.list_objects(join_url(root, f"sub-{rc}"))
            if in_session_scope(_rel(i, root), rc, ses)
        ]
        return scan_objects(store, infos, root, idmap)


def scan_dataset(store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap) -> ScanResult:
    with scrubbed_errors(idmap, "scanning the dataset-level files"):
        root = layout.deidentified_bids
        files, dirs = list_children(store, root)
        top = [d for d in dirs if not d.rsplit("/", 1)[-1].startswith("sub-")]
        for infos in store.list_many(top).values():
            files.extend(infos)
        return scan_objects(store, files, root, idmap)


# --- local processing --------------------------------------------------------------------


def session_listing(
    store: ObjectStoreResource, layout: HbcdLayout, rc: str, ses: str
) -> list[ObjectInfo]:
    return store.list_objects(join_url(layout.deidentified_bids, f"sub-{rc}", f"ses-{ses}"))


def manifest_entries(infos: Iterable[ObjectInfo], layout: HbcdLayout) -> list[ManifestEntry]:
    root = layout.deidentified_root
    return [
        ManifestEntry(Key=_rel(i, root), Size=i.size, LastModified=i.last_modified, ETag=i.etag)
        for i in infos
    ]


@dataclass
class ProcessingResult:
    partition_key: str
    images: int = 0
    outputs: list[str] = field(default_factory=list)  # relative to the de-identified root
    deleted: list[str] = field(default_factory=list)
    manifest: str | None = None
    inputs: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    qc: dict[str, dict[str, Any]] = field(default_factory=dict)


def process_session(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    partition_key: str,
    *,
    version: str,
    code_url: str,
) -> ProcessingResult:
    """Run the local pipeline on one de-identified session: per-image statistics and QC
    metrics, the session QC table, the pipeline's ``dataset_description.json``; old outputs
    that are not produced again are removed; the input manifest is written last. Reads and
    writes only the de-identified side."""
    with scrubbed_errors(None, f"processing {partition_key}"):
        rc, ses = parse_session_partition_key(partition_key)
        result = ProcessingResult(partition_key)
        session_root = join_url(layout.deidentified_bids, f"sub-{rc}", f"ses-{ses}")
        inputs = session_listing(store, layout, rc, ses)
        result.inputs = len(inputs)
        images = [i for i in inputs if is_image(i.url)]
        result.images = len(images)

        def stats(info: ObjectInfo) -> tuple[str, dict[str, Any] | None, str | None]:
            rel = _rel(info, session_root)
            try:
                with store.open(info.url, "rb") as f:
                    s = image_stats(f)
            except Exception as e:  # noqa: BLE001 - reported per image
                return rel, None, _reason(e, Scrubber(None))
            s["Sources"] = [f"bids:raw:sub-{rc}/ses-{ses}/{rel}"]
            return rel, s, None

        computed = _map(store, stats, images)
        for rel, _s, error in computed:
            if error is not None:
                result.failed[rel] = error
        if result.failed:
            raise HbcdError(
                f"processing {partition_key}: {len(result.failed)} image(s) could not be read: "
                + "; ".join(f"{k}: {v}" for k, v in sorted(result.failed.items())[:10])
            )
        out_root = join_url(layout.derivative_folder(rc, ses, PIPELINE), f"ses-{ses}")
        outputs: dict[str, bytes] = {}
        for rel, s, _ in computed:
            outputs[join_url(out_root, stats_relpath(rel))] = (
                json.dumps(s, indent=2) + "\n"
            ).encode()
            result.qc[rel] = {
                k: s.get(k) for k in ("snr", "tsnr_median", "dvars_mean_pct", "n_volumes")
            }
        qc_name = f"sub-{rc}_ses-{ses}_desc-imageqc_scans.tsv"
        outputs[join_url(out_root, qc_name)] = qc_table(
            (rel, s) for rel, s, _ in computed if s is not None
        ).encode()
        description_url = join_url(
            layout.deidentified_derivatives, f"ses-{ses}", PIPELINE, "dataset_description.json"
        )
        description = dataset_description(version, code_url).encode()
        try:
            current = store.get_bytes(description_url)
        except FileNotFoundError:
            current = None
        if current != description:
            outputs[description_url] = description
        # the old manifest no longer describes what is being written
        manifest_url = layout.manifest_url(rc, ses, PIPELINE)
        store.delete(manifest_url)
        old = store.list_objects(layout.derivative_folder(rc, ses, PIPELINE))
        sizes = {i.url: i.size for i in old}

        def put_if_changed(item: tuple[str, bytes]) -> None:
            url, data = item
            # identical outputs are left alone, so re-identification does not copy them again
            if sizes.get(url) == len(data) and store.get_bytes(url) == data:
                return
            store.put_bytes(url, data)

        _map(store, put_if_changed, list(outputs.items()))
        stale = [i.url for i in old if i.url not in outputs]
        if stale:
            store.delete(stale)
        root = layout.deidentified_root
        result.deleted = [u[len(root.rstrip("/")) + 1 :] for u in stale]
        result.outputs = sorted(u[len(root.rstrip("/")) + 1 :] for u in outputs)
        manifest = DerivativeManifest(entries=manifest_entries(inputs, layout))
        store.put_bytes(manifest_url, manifest.to_json().encode())
        result.manifest = manifest_url[len(root.rstrip("/")) + 1 :]
        return result


# --- staleness ---------------------------------------------------------------------------


@dataclass
class ManifestStatus:
    pipeline: str
    manifest: str  # relative to the de-identified root
    staleness: Staleness | None  # None: the manifest could not be read
    error: str | None = None

    @property
    def stale(self) -> bool:
        return self.staleness is None or self.staleness.stale


def session_manifests(
    store: ObjectStoreResource, layout: HbcdLayout, rc: str, ses: str
) -> dict[str, str]:
    """pipeline -> manifest URL for one session."""
    folder = join_url(layout.deidentified_derivatives, f"ses-{ses}", CBRAIN_MISC)
    files, _ = list_children(store, folder)
    out = {}
    for info in files:
        name = info.url.rsplit("/", 1)[-1]
        try:
            parsed = parse_manifest_relpath(f"{CBRAIN_MISC}/{name}")
        except ValueError:
            continue
        if parsed.rc_id == rc and parsed.session == ses:
            out[parsed.pipeline] = info.url
    return out


def derivative_status(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    partition_key: str,
    *,
    pipelines: Iterable[str] | None = None,
    current: list[ObjectInfo] | None = None,
) -> list[ManifestStatus]:
    """Compare every manifest of the session (or of ``pipelines``) with the current listing."""
    with scrubbed_errors(None, f"checking derivatives of {partition_key}"):
        rc, ses = parse_session_partition_key(partition_key)
        manifests = session_manifests(store, layout, rc, ses)
        if pipelines is not None:
            wanted = set(pipelines)
            manifests = {p: u for p, u in manifests.items() if p in wanted}
        if current is None:
            current = session_listing(store, layout, rc, ses)
        entries = manifest_entries(current, layout)
        root = layout.deidentified_root.rstrip("/") + "/"

        def one(item: tuple[str, str]) -> ManifestStatus:
            pipeline, url = item
            rel = url[len(root) :]
            try:
                manifest = DerivativeManifest.parse(store.get_bytes(url))
            except FileNotFoundError:
                return ManifestStatus(pipeline, rel, Staleness(), "manifest vanished")
            except ValueError as e:
                return ManifestStatus(
                    pipeline, rel, None, f"unreadable manifest ({type(e).__name__})"
                )
            return ManifestStatus(pipeline, rel, staleness(manifest, entries, rc, ses))

        return _map(store, one, sorted(manifests.items()))


def delete_derivative(
    store: ObjectStoreResource, layout: HbcdLayout, partition_key: str, pipeline: str
) -> int:
    """Delete a session's derivative outputs of one pipeline, then its manifest. Returns the
    number of objects deleted."""
    rc, ses = parse_session_partition_key(partition_key)
    outputs = store.list_objects(layout.derivative_folder(rc, ses, pipeline))
    if outputs:
        store.delete([i.url for i in outputs])
    store.delete(layout.manifest_url(rc, ses, pipeline))
    return len(outputs) + 1


def list_manifests(store: ObjectStoreResource, layout: HbcdLayout) -> list[ObjectInfo]:
    """Every input manifest under ``derivatives/ses-*/cbrain_misc/`` (listed concurrently)."""
    _, sessions = list_children(store, layout.deidentified_derivatives)
    folders = [
        join_url(s, CBRAIN_MISC) for s in sessions if s.rsplit("/", 1)[-1].startswith("ses-")
    ]
    out: list[ObjectInfo] = []
    for infos in store.list_many(folders).values():
        out.extend(i for i in infos if i.url.endswith(".json"))
    return out


# --- re-identification -------------------------------------------------------------------


@dataclass
class ReidentifyResult:
    new: list[str] = field(default_factory=list)  # de-identified rel paths
    newer: list[str] = field(default_factory=list)
    orphans_deleted: int = 0
    unchanged: int = 0
    unmapped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_copied: int = 0


def _read_reid_ledger(store: ObjectStoreResource, layout: HbcdLayout) -> dict[str, ReidLedgerEntry]:
    try:
        data = json.loads(gzip.decompress(store.get_bytes(layout.reid_ledger)))
    except (FileNotFoundError, ValueError, OSError, EOFError):
        return {}
    out = {}
    for rel, v in data.get("entries", {}).items():
        with contextlib.suppress(TypeError, ValueError):
            out[rel] = ReidLedgerEntry(*v)
    return out


def _write_reid_ledger(
    store: ObjectStoreResource, layout: HbcdLayout, entries: dict[str, ReidLedgerEntry]
) -> None:
    body = {
        "written_at": datetime.now(UTC).isoformat(),
        "entries": {
            k: [e.src_etag, e.src_last_modified, e.dst_etag] for k, e in sorted(entries.items())
        },
    }
    store.put_bytes(layout.reid_ledger, gzip.compress(json.dumps(body).encode(), mtime=0))


def _copy_reidentified(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    src_url: str,
    dst_url: str,
    rel: str,
    meta: dict[str, str],
    size: int,
) -> None:
    if reidentify_content(rel):
        with (
            store.open(src_url, "rb") as src,
            store.open(dst_url, "wb", meta) as dst,
        ):
            reidentify_file(rel, src, dst, idmap)
        return
    if is_s3(src_url) and is_s3(dst_url) and size < _S3_SERVER_COPY_LIMIT:
        fs = store.fs_for(src_url)
        fs.copy(
            src_url[len("s3://") :],
            dst_url[len("s3://") :],
            Metadata=meta,
            MetadataDirective="REPLACE",
        )
        return
    with (
        store.open(src_url, "rb") as src,
        store.open(dst_url, "wb", meta) as dst,
    ):
        shutil.copyfileobj(src, dst, 8 << 20)


def reidentify_derivatives(
    store: ObjectStoreResource, layout: HbcdLayout, idmap: IdentityMap
) -> ReidentifyResult:
    """Sync ``derivatives/`` from the de-identified side to the identified side with RC ->
    DCCID (and anonymized site -> site) in names and in text contents: delete orphans, replace
    copies whose source changed (its LastModified/ETag is recorded on every copy), copy new
    ones, leave the rest (recognised from listings and the ledger)."""
    with scrubbed_errors(idmap, "re-identifying derivatives"):
        src_root, dst_root = layout.deidentified_derivatives, layout.identified_derivatives
        listings = store.list_many([src_root, dst_root])
        src_infos = {_rel(i, src_root): i for i in listings[src_root]}
        dst_infos = {_rel(i, dst_root): i for i in listings[dst_root]}

        def dest(infos: dict[str, ObjectInfo]) -> list[DestObject]:
            return [
                DestObject(rel, i.size, i.etag, i.last_modified, i.metadata)
                for rel, i in infos.items()
            ]

        ledger = _read_reid_ledger(store, layout)
        plan = plan_reidentify(dest(src_infos), dest(dst_infos), idmap, ledger)
        result = ReidentifyResult(unchanged=len(plan.unchanged), unmapped=plan.unmapped)
        new_ledger = {rel: ledger[rel] for rel in plan.unchanged}

        def verify(w: Write) -> tuple[Write, bool]:
            return w, verified_unchanged(w, object_metadata(store, dst_infos[w.dst]))

        copies = list(plan.copy)
        for w, same in _map(store, verify, plan.verify):
            if same:
                result.unchanged += 1
                new_ledger[w.src] = ReidLedgerEntry(
                    w.etag, iso(w.last_modified), dst_infos[w.dst].etag
                )
            else:
                copies.append(Write(w.src, w.dst, w.etag, "newer", w.last_modified))
        if plan.delete:
            store.delete([join_url(dst_root, rel) for rel in plan.delete])
        result.orphans_deleted = len(plan.delete)
        scrub = Scrubber(idmap)

        def copy(w: Write) -> tuple[Write, str | None, str | None]:
            src_url, dst_url = join_url(src_root, w.src), join_url(dst_root, w.dst)
            meta = {META_SOURCE_LAST_MODIFIED: iso(w.last_modified), META_SOURCE_ETAG: w.etag or ""}
            try:
                _copy_reidentified(
                    store, layout, idmap, src_url, dst_url, w.src, meta, src_infos[w.src].size
                )
                etag = store.info(dst_url).etag
            except Exception as e:  # noqa: BLE001 - reported per file, scrubbed
                return w, None, _reason(e, scrub)
            return w, etag, None

        for w, etag, error in _map(store, copy, copies):
            if error is not None:
                result.failed[w.src] = error
                continue
            (result.new if w.reason == "new" else result.newer).append(w.src)
            result.bytes_copied += src_infos[w.src].size
            new_ledger[w.src] = ReidLedgerEntry(w.etag, iso(w.last_modified), etag)
        result.new.sort()
        result.newer.sort()
        _write_reid_ledger(store, layout, new_ledger)
        return result


def read_text(store: ObjectStoreResource, url: str) -> str | None:
    try:
        return store.get_bytes(url).decode("utf-8")
    except FileNotFoundError:
        return None
