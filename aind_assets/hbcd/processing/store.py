"""Derivatives on object storage: the local processing pipeline's run over a de-identified
session, and the status of every derivative's input manifest (fresh or stale) (no Dagster).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aind_assets.hbcd.identity.replace import (
    parse_session_partition_key,
)
from aind_assets.hbcd.identity.scrub import HbcdError, Scrubber, error_reason, scrubbed_errors
from aind_assets.hbcd.layout import CBRAIN_MISC, HbcdLayout
from aind_assets.hbcd.manifests import (
    DerivativeManifest,
    ManifestEntry,
    parse_manifest_relpath,
)
from aind_assets.hbcd.processing.imagestats import (
    PIPELINE,
    dataset_description,
    image_stats,
    is_image,
    qc_table,
    stats_relpath,
)
from aind_assets.hbcd.processing.staleness import Staleness, staleness
from aind_assets.hbcd.storage import list_children, map_concurrently, relpath_of
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import ObjectInfo, join_url

# --- local processing --------------------------------------------------------------------


def session_listing(
    store: ObjectStoreResource, layout: HbcdLayout, rc: str, ses: str
) -> list[ObjectInfo]:
    return store.list_objects(join_url(layout.deidentified_bids, f"sub-{rc}", f"ses-{ses}"))


def manifest_entries(infos: Iterable[ObjectInfo], layout: HbcdLayout) -> list[ManifestEntry]:
    root = layout.deidentified_root
    return [
        ManifestEntry(
            Key=relpath_of(i, root), Size=i.size, LastModified=i.last_modified, ETag=i.etag
        )
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
            rel = relpath_of(info, session_root)
            try:
                with store.open(info.url, "rb") as f:
                    s = image_stats(f)
            except Exception as e:  # noqa: BLE001 - reported per image
                return rel, None, error_reason(e, Scrubber(None))
            s["Sources"] = [f"bids:raw:sub-{rc}/ses-{ses}/{rel}"]
            return rel, s, None

        computed = map_concurrently(store, stats, images)
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

        map_concurrently(store, put_if_changed, list(outputs.items()))
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

        return map_concurrently(store, one, sorted(manifests.items()))


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
