"""The one wiring point: every asset, check, sensor, schedule and resource of the platform."""

from __future__ import annotations

import dagster as dg

from aind_assets.analysis.defs import build_analysis_definitions
from aind_assets.hbcd.definitions import build_hbcd_definitions
from aind_assets.hbcd.release.definitions import build_release_definitions
from aind_assets.io_managers.store_io_manager import ObjectStoreIOManager
from aind_assets.settings import Settings


def build_resources(settings: Settings) -> dict[str, object]:
    """Resources for Dagster, built from settings (secrets stay ``EnvVar``)."""
    docdb = settings.docdb(for_dagster=True)
    store = settings.object_store(for_dagster=True)
    return {
        "docdb": docdb,
        "object_store": store,
        "io_manager": ObjectStoreIOManager(
            object_store=store,
            docdb=docdb,
            root=settings.io_root,
            records_collection=settings.records_collection,
        ),
    }


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    return dg.Definitions.merge(
        dg.Definitions(
            assets=[],
            resources=build_resources(settings),
        ),
        # AIND analysis flow: analysis_dispatch, analysis/<name>, discovery sensors, job.
        build_analysis_definitions(settings),
        # HBCD de-identification: deidentified_session (+ blocking leak check), deidentified_dataset,
        # session_derivatives, cbrain_derivatives, reidentified_derivatives; sensors, schedules.
        build_hbcd_definitions(settings),
        # HBCD release staging: release_ready_sessions, release_staging (+ blocking checks),
        # release_summary, the spec sensor, job hbcd_release.
        build_release_definitions(settings),
    )


defs = build_definitions()
