"""Identified -> de-identified -> processed -> staged, through the real HBCD flow in Dagster on the
real S3 server: the discovery sensor and ``hbcd/deidentified_session`` (with its blocking leak
check) de-identify, ``hbcd/session_derivatives`` (imagestats) and a CBRAIN-style bibsnet output
process, then the release assets stage, check and summarize, all in one Dagster instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from aind_assets.hbcd.deid.sensors import hbcd_session_discovery
from aind_assets.hbcd.processing.sensors import hbcd_derivatives_sensor
from aind_assets.hbcd.release.resources import HbcdReleaseResource
from aind_assets.io_managers.store_io_manager import ObjectStoreIOManager
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url
from aind_assets_tests.hbcd.flow_support import make_world
from aind_assets_tests.hbcd.release.support import SPEC_YAML, plant_identified_qc, write_bibsnet
from aind_assets_tests.hbcd.release.test_assets import (
    RECORDS,
    check_first_release,
    register_release,
    run_release,
)

pytestmark = pytest.mark.servers

# imagestats (the flow's own processing) reads every image: only bibsnet's inputs keep a file
# that is below QC; its outputs that are not BIDS files are in its dataset's .bidsignore (the
# release writes them: plan.PIPELINE_BIDS_IGNORE), so the spec needs no ignore pattern
FLOW_SPEC = (
    SPEC_YAML.replace("pipelines: [bibsnet]", "pipelines: [bibsnet, imagestats]")
    + "keep_inputs_of: [bibsnet]\n"
)


def _ok(results: list[dg.ExecuteInProcessResult]) -> None:
    for r in results:
        assert r.success, [e.message for e in r.all_events if e.is_failure]


def test_deidentification_flow_then_release(
    s3_store: ObjectStoreResource, docdb: DocDBResource, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        w = make_world(s3_store, docdb, instance, tmp_path, n_subjects=4)
        plant_identified_qc(w.store, w.layout.identified_bids, w.idmap)

        # de-identification (discovery sensor -> runs with the blocking leak check)
        tick = w.tick(hbcd_session_discovery)
        # every session of the 4 subjects, in batch runs (partition ranges)
        covered = {k for r in tick.run_requests for k in w.sessions_of(r)}
        assert len(covered) == 8, tick
        _ok(w.run_all(tick.run_requests))
        # processing: the flow's imagestats, then CBRAIN's bibsnet outputs appear
        tick = w.tick(hbcd_derivatives_sensor)
        assert tick.run_requests
        _ok(w.run_all(tick.run_requests))
        write_bibsnet(w.store, w.layout.deidentified_root, w.idmap)

        # release, on the same instance and IO root as the flow
        res = HbcdReleaseResource(
            object_store=w.store,
            deidentified_root=w.layout.deidentified_root,
            staging_root=w.store.url("staging"),
            specs_root=join_url(w.io_root, "hbcd", "release_specs"),
            identity_map=w.hbcd.identity_map,
        )
        resources = {
            "hbcd_release": res,
            "docdb": docdb,
            "io_manager": ObjectStoreIOManager(
                object_store=w.store, docdb=docdb, root=w.io_root, records_collection=RECORDS
            ),
        }
        release = register_release(res, instance, FLOW_SPEC)
        result = run_release(resources, instance, release)
        check_first_release(
            w.store,
            res,
            w.idmap,
            result,
            release,
            io_root=w.io_root,
            docdb=docdb,
            also_pipelines=("imagestats",),
        )
