"""``aind-assets demo seed``: a small, realistic world in the configured stores.

AIND: data-asset records in DocDB, each with real NWB files (units with spike times, trials)
under its ``location``. HBCD: an identified BIDS tree (``assembly_bids``) and the identifier
map on the identified side. Files are written first and records last, so a record never
points at missing data.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from aind_assets.demo.bids import write_identified_bids
from aind_assets.demo.records import demo_asset_records, write_demo_files
from aind_assets.progress import Progress, no_progress
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url
from aind_assets.settings import Settings

DEMO_ASSETS = 24
BIDS_PREFIX = "assembly_bids"


@dataclass(frozen=True)
class SeedReport:
    records: int
    nwb_files: int
    bids_files: int
    identity_map: str


def is_seeded(settings: Settings, docdb: DocDBResource, store: ObjectStoreResource) -> bool:
    """True when both flows already have their demo data (the run command seeds only if not)."""
    has_records = docdb.count(settings.assets_collection) > 0
    has_bids = bool(store.list_objects(join_url(settings.hbcd_identified_root, BIDS_PREFIX)))
    return has_records and has_bids


def seed_demo(
    settings: Settings,
    docdb: DocDBResource,
    store: ObjectStoreResource,
    *,
    n_assets: int = DEMO_ASSETS,
    n_subjects: int = 5,
    progress: Progress = no_progress,
) -> SeedReport:
    """Write the demo world; idempotent (records are upserted, files overwritten).

    ``progress`` hears one line per step (the command prints them; a minute on a slow disk).
    """
    for root in (settings.data_assets_root, settings.hbcd_identified_root, settings.io_root):
        store.ensure_root(root)
    records = demo_asset_records(n_assets, bucket_url=settings.data_assets_root)
    with tempfile.TemporaryDirectory(prefix="aind-demo-") as tmp:
        tmp_dir = Path(tmp)
        progress(f"demo seed: writing NWB files of {len(records)} data assets")
        written = write_demo_files(records, tmp_dir / "nwb")
        by_name = {r["name"]: r for r in records}
        uploads = [
            (tmp_dir / "nwb" / name, by_name[name]["location"])
            for name in written
            if (tmp_dir / "nwb" / name).is_dir()
        ]
        progress(f"demo seed: uploading {len(uploads)} NWB folders")
        store.map_concurrently(lambda pair: store.put_tree(*pair), uploads)

        bids_root = tmp_dir / "bids"
        progress(f"demo seed: writing the identified BIDS tree of {n_subjects} subjects")
        map_path = write_identified_bids(bids_root, n_subjects=n_subjects, extras=True)
        bids_files = store.put_tree(
            bids_root / BIDS_PREFIX, join_url(settings.hbcd_identified_root, BIDS_PREFIX)
        )
        progress(f"demo seed: uploaded {len(bids_files)} BIDS files; uploading the identifier map")
        store.put_file(map_path, settings.hbcd_identity_map)
    docdb.ensure_index(settings.assets_collection, ["last_modified", "_id"])
    docdb.ensure_index(settings.assets_collection, "name", unique=True)
    progress(f"demo seed: upserting {len(records)} data-asset records")
    docdb.bulk_upsert(settings.assets_collection, records)
    return SeedReport(
        records=len(records),
        nwb_files=sum(len(p) for p in written.values()),
        bids_files=len(bids_files),
        identity_map=settings.hbcd_identity_map,
    )
