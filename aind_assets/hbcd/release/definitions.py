"""Everything release staging adds to the platform's definitions (wired in
:mod:`aind_assets.definitions`).
"""

import dagster as dg

from aind_assets.hbcd.release.assets import release_ready_sessions, release_staging, release_summary
from aind_assets.hbcd.release.resources import (
    READY_KEY,
    STAGING_KEY,
    SUMMARY_KEY,
    build_release_resource,
)
from aind_assets.hbcd.release.sensors import release_specs_sensor


def build_release_definitions(settings) -> dg.Definitions:  # noqa: ANN001
    """Release assets, checks, the spec sensor and the ``hbcd_release`` resource."""
    from aind_assets.hbcd.release.checks import release_bids_valid, release_no_identifiers

    return dg.Definitions(
        assets=[release_ready_sessions, release_staging, release_summary],
        asset_checks=[release_bids_valid, release_no_identifiers],
        sensors=[release_specs_sensor],
        jobs=[
            dg.define_asset_job(
                "hbcd_release",
                selection=dg.AssetSelection.assets(READY_KEY, STAGING_KEY, SUMMARY_KEY),
                description=(
                    "Select, stage, check and summarize one release (pick its partition: the "
                    "release identifier)"
                ),
            )
        ],
        resources={"hbcd_release": build_release_resource(settings)},
    )
