"""An AIND world on the real servers: demo data-asset records in DocDB, their NWB files in S3.

The NWB files are written once per session (pynwb, ~0.2 s each) and uploaded per test to the
test's own bucket; records go to the test's own database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from aind_assets.analysis.config import EXAMPLE_DISPATCH_CONFIG
from aind_assets.analysis.resources import AnalysisResource
from aind_assets.demo.records import demo_asset_records, write_demo_files
from aind_assets.io_managers.store_io_manager import ObjectStoreIOManager
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource

#: Demo records written to disk once; a test seeds the first ``n`` (prefix-stable).
MAX_RECORDS = 16
SEEDED = 12
ASSETS = "data_assets"
RESULTS = "analysis_results"
RECORDS = "processing_records"
BUCKET_PLACEHOLDER = "s3://placeholder/data-assets"


@pytest.fixture(scope="session")
def demo_nwb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-nwb")
    write_demo_files(demo_asset_records(MAX_RECORDS, bucket_url=BUCKET_PLACEHOLDER), out)
    return out


@pytest.fixture(scope="session")
def envs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of analysis environments for the session (keyed by their requirements' hash):
    the first test needing an environment builds it, the others reuse it."""
    return tmp_path_factory.mktemp("analysis-envs")


@dataclasses.dataclass
class World:
    docdb: DocDBResource
    store: ObjectStoreResource
    nwb_dir: Path
    assets_root: str
    resource: AnalysisResource
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def all_records(self, n: int = MAX_RECORDS) -> list[dict[str, Any]]:
        return demo_asset_records(n, bucket_url=self.assets_root)

    def seed(self, n: int = SEEDED, *, start: int = 0, files: bool = True) -> list[dict]:
        """Upload the NWB files and upsert records ``start..n`` (files first, records last)."""
        records = self.all_records(max(n, MAX_RECORDS))[start:n]
        if files:
            pairs = [
                (self.nwb_dir / r["name"], r["location"])
                for r in records
                if (self.nwb_dir / r["name"]).exists()
            ]
            self.store.map_concurrently(lambda p: self.store.put_tree(*p), pairs)
        self.docdb.bulk_upsert(ASSETS, records)
        self.records.extend(records)
        return records

    def resources(self, **overrides: Any) -> dict[str, Any]:
        resource = (
            make_resource(self.docdb, self.store, **overrides) if overrides else self.resource
        )
        return {
            "analysis": resource,
            "io_manager": ObjectStoreIOManager(
                object_store=self.store,
                docdb=self.docdb,
                root=self.store.url("dagster-io"),
                records_collection=RECORDS,
            ),
        }

    def by_name(self, name: str) -> dict[str, Any]:
        return next(r for r in self.records if r["name"] == name)


def make_resource(
    docdb: DocDBResource, store: ObjectStoreResource, **overrides: Any
) -> AnalysisResource:
    values: Mapping[str, Any] = {
        "docdb": docdb,
        "object_store": store,
        "assets_collection": ASSETS,
        "results_collection": RESULTS,
        "results_root": store.url("analysis-results"),
        "dispatch_config": str(EXAMPLE_DISPATCH_CONFIG),
        "page_size": 5,
        **overrides,
    }
    return AnalysisResource(**values)


@pytest.fixture
def world(docdb: DocDBResource, s3_store: ObjectStoreResource, demo_nwb_dir: Path) -> World:
    return World(
        docdb=docdb,
        store=s3_store,
        nwb_dir=demo_nwb_dir,
        assets_root=s3_store.url("data-assets"),
        resource=make_resource(docdb, s3_store),
    )


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as inst:
        yield inst
