"""Everything the HBCD flow adds to the platform's definitions (wired in
:mod:`aind_assets.definitions`)."""

import dagster as dg

from aind_assets.hbcd.deid.assets import (
    cbrain_derivatives,
    deidentified_dataset,
    deidentified_session,
    reidentified_derivatives,
    session_derivatives,
)
from aind_assets.hbcd.deid.checks import (
    cbrain_derivatives_in_sync,
    dataset_has_no_identifiers,
    session_derivatives_in_sync,
    session_has_no_identifiers,
)
from aind_assets.hbcd.deid.sensors import JOBS, SCHEDULES, SENSORS
from aind_assets.hbcd.resources import HbcdResource, IdentityMapResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.settings import Settings

ASSETS = [
    deidentified_session,
    deidentified_dataset,
    session_derivatives,
    cbrain_derivatives,
    reidentified_derivatives,
]
CHECKS = [
    session_has_no_identifiers,
    dataset_has_no_identifiers,
    session_derivatives_in_sync,
    cbrain_derivatives_in_sync,
]

__all__ = [
    "ASSETS",
    "CHECKS",
    "JOBS",
    "SCHEDULES",
    "SENSORS",
    "build_hbcd_definitions",
    "hbcd_resources",
]


def hbcd_resources(settings: Settings, store: ObjectStoreResource) -> dict[str, object]:
    """The ``hbcd`` resource: both sides' roots and the identity map, on the platform's store."""
    return {
        "hbcd": HbcdResource(
            object_store=store,
            identity_map=IdentityMapResource(object_store=store, url=settings.hbcd_identity_map),
            identified_root=settings.hbcd_identified_root,
            deidentified_root=settings.hbcd_deidentified_root,
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
