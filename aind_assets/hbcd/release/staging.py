"""Release staging on object storage (no Dagster): select, plan, copy, verify, promote, mark.

Layout under the staging root::

    <release>/.staging-<run id>/hbcd/...   temporary copy of one run (deleted once promoted)
    <release>/hbcd/rawdata/...             the release: raw BIDS dataset
    <release>/hbcd/derivatives/<pipeline>/ the release: one derivative dataset per pipeline
    <release>/processing.json              processing record of the staging (aind-data-schema)
    <release>/_COMPLETE                    written LAST: counts, checksum manifest, checks

:func:`stage_release` copies the planned files into the temporary prefix (server-side on S3),
writes the rebuilt TSV/JSON files there, checks that the copy is complete, that the tree is
BIDS-valid (:mod:`aind_assets.hbcd.release.validity`) and that no file holds an identifier
(:func:`aind_assets.hbcd.leaks.scan.scan_for_identifiers`, which also yields each file's sha256),
then promotes it to ``<release>/hbcd/`` (removing anything else there), writes
``processing.json`` and finally ``_COMPLETE``. A release without ``_COMPLETE`` is incomplete,
whatever files it has; a run that fails anywhere leaves no marker and the next run starts over.
With a marker present, a run whose plan is the same and whose files are all there changes
nothing; a different plan is refused (a complete release is not changed in place) unless
``replace_complete``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aind_assets import lineage
from aind_assets.hbcd.deid.commit import require_committed
from aind_assets.hbcd.identity.idmap import Identifiers, IdentityMap
from aind_assets.hbcd.leaks.scan import Finding, scan_for_identifiers
from aind_assets.hbcd.release.decisions import Decision
from aind_assets.hbcd.release.errors import (
    ReleaseAlreadyCompleteError,
    ReleaseLeakError,
    ReleaseValidationError,
    SourceChangedError,
    StagingError,
)
from aind_assets.hbcd.release.official import official_problems
from aind_assets.hbcd.release.plan import (
    CHUNK,
    HBCD,
    MARKER,
    RECORD,
    TEMP_PREFIX,
    PlannedFile,
    included_sessions,
    list_deidentified,
    plan_fingerprint,
    plan_staging,
    read_texts,
)
from aind_assets.hbcd.release.spec import (
    DERIV,
    RAW,
    ReleaseSpec,
    validate_release_id,
)
from aind_assets.hbcd.release.validity import (
    Problem,
    files_read,
    validate_release,
)
from aind_assets.hbcd.streams import ReadableBinary
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url, relative_key


# --- checks on a staged tree ------------------------------------------------------------------
class _HashingReader(io.RawIOBase):
    def __init__(self, f: ReadableBinary):
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def readinto(self, b) -> int:  # noqa: ANN001
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def scan_release(
    store: ObjectStoreResource,
    root: str,
    relpaths: Sequence[str],
    identifiers: Identifiers | IdentityMap,
) -> tuple[list[Finding], dict[str, tuple[int, str]]]:
    """Leak-scan every file under ``root`` (the de-identification scanner, concurrently);
    returns the findings (paths redacted) and ``{relpath: (size, sha256)}``."""
    ids = identifiers.identifiers() if isinstance(identifiers, IdentityMap) else identifiers
    if len(ids) == 0:
        raise ValueError("the identity map has no identifiers: the leak scan would prove nothing")

    def one(rel: str) -> tuple[list[Finding], int, str]:
        with store.open(join_url(root, rel), "rb") as f:
            reader = _HashingReader(f)
            found = scan_for_identifiers(rel, reader, ids)
            reader.drain()
        return found, reader.size, reader.sha.hexdigest()

    findings: list[Finding] = []
    sums: dict[str, tuple[int, str]] = {}
    for rel, (found, size, sha) in zip(
        relpaths, store.map_concurrently(one, list(relpaths)), strict=True
    ):
        findings.extend(found)
        sums[rel] = (size, sha)
    return findings, sums


def validate_staged(
    store: ObjectStoreResource,
    hbcd_root: str,
    relpaths: Sequence[str],
    *,
    ignore: Sequence[str] = (),
    texts: Mapping[str, bytes] | None = None,
    official: bool = True,
) -> list[Problem]:
    """BIDS validity of the tree under ``hbcd_root`` (``relpaths`` relative to it): the
    platform's rules (the files they read are fetched concurrently first) and, with
    ``official``, the errors of ``bids-validator-deno`` on a local mirror
    (:mod:`~aind_assets.hbcd.release.official`)."""
    generated = {rel: data.decode("utf-8-sig") for rel, data in (texts or {}).items()}
    present = set(relpaths)
    fetched = read_texts(store, hbcd_root, [p for p in files_read(relpaths) if p not in generated])

    def read_text(rel: str) -> str:
        if rel in generated:
            return generated[rel]
        if rel in fetched:
            return fetched[rel]
        if rel not in present:
            raise FileNotFoundError(rel)
        return store.get_bytes(join_url(hbcd_root, rel)).decode("utf-8-sig")

    problems = validate_release(relpaths, read_text, ignore=ignore)
    if official:
        problems += official_problems(store, hbcd_root, relpaths, texts=texts)
    return problems


# --- staging ----------------------------------------------------------------------------------
def release_url(staging_root: str, release: str) -> str:
    return join_url(staging_root, validate_release_id(release))


def read_marker(store: ObjectStoreResource, staging_root: str, release: str) -> dict | None:
    url = join_url(release_url(staging_root, release), MARKER)
    if not store.exists(url):
        return None
    try:
        return json.loads(store.get_bytes(url))
    except ValueError:
        raise ValueError(f"{url} is not valid JSON: the completion marker is damaged") from None


@dataclass
class StagingResult:
    release: str
    url: str
    status: str  # "staged", "unchanged" or "replaced"
    marker: dict

    @property
    def counts(self) -> dict:
        return self.marker["counts"]

    def summary(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "url": self.url,
            "status": self.status,
            "completed_at": self.marker["completed_at"],
            "plan_sha256": self.marker["plan_sha256"],
            "counts": self.counts,
            "processing_record": self.marker.get("processing_record"),
        }


def _counts(plan: Sequence[PlannedFile], decisions: Sequence[Decision]) -> dict[str, Any]:
    sessions = [d for d in decisions if d.kind == "session" and d.included]
    pipelines: dict[str, int] = defaultdict(int)
    for d in decisions:
        if d.kind == "pipeline" and d.included:
            pipelines[d.pipeline] += 1
    return {
        "files": len(plan),
        "bytes": 0,  # filled from the checksums
        "rawdata_files": sum(1 for p in plan if p.dest.startswith("rawdata/")),
        "derivative_files": sum(1 for p in plan if p.dest.startswith("derivatives/")),
        "subjects": len({d.subject for d in sessions}),
        "sessions": len(sessions),
        "sessions_per_pipeline": dict(sorted(pipelines.items())),
        "excluded_sessions": sum(1 for d in decisions if d.kind == "session" and not d.included),
        "excluded_files": sum(
            1 for d in decisions if d.kind in ("raw", "derivative") and not d.included
        ),
    }


def _changes(marker: Mapping[str, Any], plan: Sequence[PlannedFile]) -> str:
    def key(f: Mapping[str, Any]) -> tuple:
        if f.get("generated"):
            return ("generated", f["sha256"])
        return (f.get("source"), f.get("source_etag"), f["size"])

    old = {f["path"]: key(f) for f in marker["files"]}
    new: dict[str, tuple] = {}
    for p in plan:
        if p.content is not None:
            new[f"{HBCD}/{p.dest}"] = ("generated", hashlib.sha256(p.content).hexdigest())
        else:
            new[f"{HBCD}/{p.dest}"] = (p.source, p.etag, p.size)
    added = len(new.keys() - old.keys())
    removed = len(old.keys() - new.keys())
    changed = sum(1 for k in new.keys() & old.keys() if new[k] != old[k])
    return f"{added} file(s) added, {removed} removed, {changed} changed"


def stage_release(
    store: ObjectStoreResource,
    spec: ReleaseSpec,
    decisions: Sequence[Decision],
    *,
    deid_root: str,
    staging_root: str,
    run_id: str,
    identifiers: Identifiers | IdentityMap,
    replace_complete: bool = False,
    started: datetime | None = None,
    log: Callable[[str], None] = lambda msg: None,
    guard: Callable[[], None] = lambda: None,
) -> StagingResult:
    """Stage (or confirm) one release; see the module docstring.

    ``guard()`` is called before every step that deletes or promotes (the caller's lease
    check): it raises to stop a run that no longer holds the release."""
    started = started or datetime.now(UTC)
    release = spec.release
    rel_url = release_url(staging_root, release)
    final = join_url(rel_url, HBCD)
    marker_url = join_url(rel_url, MARKER)
    if not run_id or "/" in run_id:
        raise ValueError("run_id must be a non-empty single path segment")

    plan = plan_staging(store, spec, decisions, deid_root)
    fingerprint = plan_fingerprint(plan)
    listing = {relative_key(i.url, rel_url): i for i in store.list_objects(rel_url)}
    marker = read_marker(store, staging_root, release)
    status = "staged"
    if marker is not None:
        promoted = {k: v.size for k, v in listing.items() if k.startswith(f"{HBCD}/")}
        expected = {f["path"]: f["size"] for f in marker["files"]}
        if marker.get("plan_sha256") == fingerprint and promoted == expected:
            log(f"release {release} is complete and unchanged: nothing to do")
            return StagingResult(release, rel_url, "unchanged", marker)
        if marker.get("plan_sha256") != fingerprint and not replace_complete:
            raise ReleaseAlreadyCompleteError(
                f"release {release} is complete (since {marker.get('completed_at')}) and the "
                f"release-ready data now differ ({_changes(marker, plan)}); a complete release "
                "is not changed in place: register a new release identifier, or re-run with "
                "replace_complete"
            )
        status = "replaced" if marker.get("plan_sha256") != fingerprint else "repaired"
        log(f"release {release}: removing the completion marker before {status} staging")
        guard()
        store.delete(marker_url)

    # 1. sources still as selected, and whole
    require_committed(store, deid_root, included_sessions(decisions), f"release {release}")
    current = {f.relpath: f for f in list_deidentified(store, deid_root)}
    for p in plan:
        for src in (s for s in (p.source, *p.identical_sources) if s):
            now_f = current.get(src)
            if now_f is None:
                raise SourceChangedError(
                    f"{src} disappeared after hbcd/release_ready_sessions selected it; "
                    "re-materialize the selection"
                )
            if p.source == src and (now_f.size != p.size or (now_f.etag or "") != p.etag):
                raise SourceChangedError(
                    f"{src} changed after hbcd/release_ready_sessions selected it; "
                    "re-materialize the selection"
                )

    # 2. stale temporary copies of failed runs
    stale = {k.split("/", 1)[0] for k in listing if k.startswith(TEMP_PREFIX)}
    if stale:
        log(f"removing {len(stale)} temporary prefix(es) of earlier runs")
        guard()
        store.delete([join_url(rel_url, s) for s in sorted(stale)], recursive=True)

    temp = join_url(rel_url, f"{TEMP_PREFIX}{run_id}", HBCD)
    try:
        # 3. copy and write into the temporary prefix
        copies = [
            (join_url(deid_root, p.source), join_url(temp, p.dest))
            for p in plan
            if p.content is None
        ]
        log(f"copying {len(copies)} file(s) to {temp}")
        store.copy_many(copies)
        generated = {p.dest: p.content for p in plan if p.content is not None}
        store.map_concurrently(
            lambda item: store.put_bytes(join_url(temp, item[0]), item[1]),
            sorted(generated.items()),
        )
        # 4. complete?
        staged = {relative_key(i.url, temp): i.size for i in store.list_objects(temp)}
        want = {p.dest: (p.size if p.content is None else len(p.content)) for p in plan}
        if staged != want:
            missing = sorted(want.keys() - staged.keys())
            wrong = sorted(k for k in want.keys() & staged.keys() if want[k] != staged[k])
            raise StagingError(
                f"the temporary copy of release {release} is incomplete: {len(missing)} "
                f"missing (e.g. {missing[:1]}), {len(wrong)} of the wrong size (e.g. {wrong[:1]})"
            )
        # 5. valid?
        problems = validate_staged(
            store, temp, sorted(staged), ignore=spec.bids_ignore, texts=generated
        )
        if problems:
            raise ReleaseValidationError(release, problems)
        # 6. no identifier; checksums
        log(f"leak-scanning {len(staged)} staged file(s)")
        findings, sums = scan_release(store, temp, sorted(staged), identifiers)
        if findings:
            raise ReleaseLeakError(release, findings)
    except ReleaseLeakError:
        store.delete(join_url(rel_url, f"{TEMP_PREFIX}{run_id}"), recursive=True)
        raise

    # 7. promote: remove what is not in the plan, copy the temporary tree over
    guard()
    final_now = {relative_key(i.url, final) for i in store.list_objects(final)}
    extra = sorted(final_now - want.keys())
    if extra:
        log(f"removing {len(extra)} file(s) of an earlier staging not in this plan")
        store.delete([join_url(final, e) for e in extra])
    log(f"promoting {len(want)} file(s) to {final}")
    store.copy_many([(join_url(temp, d), join_url(final, d)) for d in sorted(want)])
    promoted = {relative_key(i.url, final): i.size for i in store.list_objects(final)}
    if promoted != want:
        raise StagingError(f"promotion of release {release} is incomplete; re-run the staging")

    # 8. processing record, then the marker, last
    files = []
    by_dest = {p.dest: p for p in plan}
    for dest in sorted(want):
        p = by_dest[dest]
        size, sha = sums[dest]
        files.append(
            {
                "path": f"{HBCD}/{dest}",
                "size": size,
                "sha256": sha,
                "source": p.source,
                "source_etag": p.etag if p.content is None else "",
                "source_last_modified": p.last_modified.isoformat() if p.last_modified else None,
                **({"identical_sources": p.identical_sources} if p.identical_sources else {}),
                **({"generated": True} if p.content is not None else {}),
            }
        )
    counts = _counts(plan, decisions)
    counts["bytes"] = sum(f["size"] for f in files)
    record_url = join_url(rel_url, RECORD)
    code = lineage.build_code(
        name="hbcd/release_staging",
        parameters={"release_spec": spec.model_dump(mode="json"), "plan_sha256": fingerprint},
        input_data=[join_url(deid_root, RAW), join_url(deid_root, DERIV)],
        commit=lineage.git_commit(),
    )
    record = lineage.build_processing(
        code=code,
        start=started,
        output_location=join_url(rel_url, HBCD),
        output_path=f"{release}/{HBCD}",
        name="HBCD release staging",
        output_parameters={k: v for k, v in counts.items() if k != "sessions_per_pipeline"},
        notes=f"release {release}, run {run_id}",
    )
    name = lineage.record_name(code)
    guard()
    store.put_bytes(record_url, record.model_dump_json(indent=2).encode())
    marker = {
        "release": release,
        "completed_at": datetime.now(UTC).isoformat(),
        "run_id": run_id,
        "plan_sha256": fingerprint,
        "manifest_sha256": hashlib.sha256(
            json.dumps([(f["path"], f["size"], f["sha256"]) for f in files]).encode()
        ).hexdigest(),
        "counts": counts,
        "checks": {"bids_problems": 0, "leak_findings": 0, "files_scanned": len(files)},
        "processing_record": {"name": name, "path": RECORD},
        "spec": spec.model_dump(mode="json"),
        "files": files,
    }
    store.put_bytes(marker_url, json.dumps(marker, indent=1).encode())
    store.delete(join_url(rel_url, f"{TEMP_PREFIX}{run_id}"), recursive=True)
    log(f"release {release} complete: {counts['files']} files, {counts['bytes']} bytes")
    return StagingResult(release, rel_url, status, marker)
