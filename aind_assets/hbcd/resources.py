"""Dagster resources of the HBCD flow: the identity map and the two sides' roots.

The identity map is read from the identified side, parsed (duplicates or missing cells are an
error naming the row and column, never a value) and cached per process by the object's ETag,
so a sensor tick costs one HEAD request when the map has not changed. It is never logged, put
in metadata, tags or partition keys, or written anywhere.
"""

import threading

import dagster as dg
from pydantic import Field

from aind_assets.hbcd.identity.idmap import IdentityMap, parse_identity_map
from aind_assets.hbcd.identity.scrub import HbcdError
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.parallel import DEFAULT_WORKERS
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.runs import DEFAULT_MAX_QUEUED_RUNS
from aind_assets.textfiles import TextInputError, decode_text

_CACHE: dict[tuple[str, str], IdentityMap] = {}
_LOCK = threading.Lock()


#: Most sessions per de-identification run (setting ``HBCD_RUN_BATCH_SIZE``): large enough that a
#: tick's sessions start at once in the flow's run slots, each run paying one process start.
HBCD_BATCH_SIZE = 50


class IdentityMapResource(dg.ConfigurableResource):
    """The identity-map CSV (DCCID, PSCID, site, release_candidate_id, anonymized_site) on the
    identified side."""

    object_store: ObjectStoreResource
    url: str = Field(description="URL of the identity-map CSV (identified side only)")

    def load(self) -> IdentityMap:
        """The parsed map (cached while the object's ETag is unchanged)."""
        try:
            info = self.object_store.info(self.url)
        except FileNotFoundError:
            raise HbcdError(f"identity map not found at {self.url}") from None
        key = (self.url, info.etag or f"{info.size}-{info.last_modified.isoformat()}")
        with _LOCK:
            cached = _CACHE.get(key)
        if cached is not None:
            return cached
        data = self.object_store.get_bytes(self.url)
        try:
            text = decode_text(data, f"{self.url} (identity map)")
        except TextInputError as e:  # names the offset, never a value
            raise HbcdError(str(e)) from None
        try:
            idmap = parse_identity_map(text, self.url)
        except ValueError as e:  # messages name the row and column, never a value
            raise HbcdError(str(e)) from None
        with _LOCK:
            for k in [k for k in _CACHE if k[0] == self.url]:
                del _CACHE[k]
            _CACHE[key] = idmap
        return idmap


class HbcdResource(dg.ConfigurableResource):
    """Where the HBCD flow reads and writes: the identified (PR) and de-identified roots, the
    object store that reaches both, and the identity map."""

    object_store: ObjectStoreResource
    identity_map: IdentityMapResource
    identified_root: str = Field(description="Identified side (PR bucket), s3://... or a folder")
    deidentified_root: str = Field(description="De-identified side, s3://... or a folder")
    max_queued_runs: int = Field(
        default=DEFAULT_MAX_QUEUED_RUNS,
        description="HBCD runs the discovery sensor and schedule may leave waiting in the queue",
    )
    run_batch_size: int = Field(
        default=HBCD_BATCH_SIZE,
        ge=1,
        description="Most sessions per de-identification run that the discovery sensor and the "
        "daily schedule request (1: one run per session); a tick's sessions are spread over the "
        "HBCD runs the run queue starts at once",
    )
    num_parallel_workers: int = Field(
        default=DEFAULT_WORKERS,
        ge=1,
        description="Subjects de-identified (and leak-checked) at once in one run; the run "
        "config num_parallel_workers of hbcd/deidentified_session wins",
    )
    verify_unchanged_images: bool = Field(
        default=True,
        description="Read and inflate (CRC-32) an unchanged .nii.gz while the server copies it; "
        "false: read only its head and last 8 bytes (aind_assets/hbcd/deid/files.py)",
    )

    @property
    def layout(self) -> HbcdLayout:
        return HbcdLayout(self.identified_root, self.deidentified_root)

    @property
    def store(self) -> ObjectStoreResource:
        return self.object_store

    def idmap(self) -> IdentityMap:
        return self.identity_map.load()
