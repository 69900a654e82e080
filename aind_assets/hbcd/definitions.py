"""Everything the HBCD flow adds to the platform's definitions, stage by stage (wired in
:mod:`aind_assets.definitions`). Release staging wires itself in
:func:`aind_assets.hbcd.release.assets.build_release_definitions`."""

import dagster as dg

from aind_assets.hbcd.deid.assets import deidentified_dataset, deidentified_session
from aind_assets.hbcd.deid.checks import dataset_has_no_identifiers, session_has_no_identifiers
from aind_assets.hbcd.deid.sensors import (
    dataset_job,
    deidentification_job,
    hbcd_daily_deidentification,
    hbcd_session_discovery,
    session_job,
)
from aind_assets.hbcd.processing.assets import cbrain_derivatives, session_derivatives
from aind_assets.hbcd.processing.checks import (
    cbrain_derivatives_in_sync,
    session_derivatives_in_sync,
)
from aind_assets.hbcd.processing.sensors import (
    cbrain_check_job,
    hbcd_cbrain_observer,
    hbcd_derivatives_sensor,
    processing_job,
)
from aind_assets.hbcd.reid.assets import loris_change_feed, reidentified_derivatives
from aind_assets.hbcd.reid.sensors import hbcd_daily_reidentification, reidentify_job
from aind_assets.hbcd.resources import HbcdResource, IdentityMapResource
from aind_assets.hbcd.sensors import hbcd_automation
from aind_assets.hbcd.sources.assets import hbcd_identified_observer, identified_session
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.settings import Settings

ASSETS: list[dg.AssetsDefinition | dg.AssetSpec] = [
    identified_session,
    deidentified_session,
    deidentified_dataset,
    session_derivatives,
    cbrain_derivatives,
    reidentified_derivatives,
    loris_change_feed,
]
CHECKS = [
    session_has_no_identifiers,
    dataset_has_no_identifiers,
    session_derivatives_in_sync,
    cbrain_derivatives_in_sync,
]
SENSORS = [
    hbcd_identified_observer,
    hbcd_session_discovery,
    hbcd_derivatives_sensor,
    hbcd_cbrain_observer,
    hbcd_automation,
]
SCHEDULES = [hbcd_daily_deidentification, hbcd_daily_reidentification]
JOBS = [
    session_job,
    dataset_job,
    deidentification_job,
    processing_job,
    reidentify_job,
    cbrain_check_job,
]


def hbcd_resources(settings: Settings, store: ObjectStoreResource) -> dict[str, object]:
    """The ``hbcd`` resource: both sides' roots and the identity map, on the platform's store."""
    return {
        "hbcd": HbcdResource(
            object_store=store,
            identity_map=IdentityMapResource(object_store=store, url=settings.hbcd_identity_map),
            identified_root=settings.hbcd_identified_root,
            deidentified_root=settings.hbcd_deidentified_root,
            max_queued_runs=settings.max_queued_runs_per_flow,
            run_batch_size=settings.hbcd_run_batch_size,
            num_parallel_workers=settings.num_parallel_workers,
            verify_unchanged_images=settings.hbcd_verify_unchanged_images,
        )
    }


def build_hbcd_definitions(settings: Settings) -> dg.Definitions:
    """De-identification, leak checks, processing, staleness and re-identification."""
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        sensors=SENSORS,
        schedules=SCHEDULES,
        jobs=JOBS,
        resources=hbcd_resources(settings, settings.object_store(for_dagster=True)),
    )
