"""Schedule and job of the re-identification stage. After derivatives change,
``hbcd/reidentified_derivatives`` is requested by its automation condition
(:data:`~aind_assets.hbcd.reid.assets.REIDENTIFY_WHEN`, evaluated by ``hbcd_automation``); the
daily schedule re-runs it in any case, as a reconciliation (a failed run, a file changed by hand).
"""

import dagster as dg

from aind_assets.hbcd.keys import (
    AUTOMATED_TAGS,
    FLOW_TAGS,
    LORIS_CHANGE_FEED,
    REIDENTIFIED_DERIVATIVES,
)

reidentify_job = dg.define_asset_job(
    "hbcd_reidentify_derivatives",
    selection=dg.AssetSelection.assets(REIDENTIFIED_DERIVATIVES, LORIS_CHANGE_FEED),
    tags=FLOW_TAGS,
    description=(
        "Copy the derivatives back to the identified side (release-candidate IDs replaced by "
        "DCCIDs) and write the LORIS change feed."
    ),
)


# --- re-identification --------------------------------------------------------------------


def reidentify_request(run_key: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=[REIDENTIFIED_DERIVATIVES, LORIS_CHANGE_FEED],
        tags=AUTOMATED_TAGS,
    )


@dg.schedule(
    name="hbcd_daily_reidentification",
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    target=dg.AssetSelection.assets(REIDENTIFIED_DERIVATIVES, LORIS_CHANGE_FEED),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Daily re-identification at 06:00 UTC, whatever changed: catches up after a failed run "
        "or a derivative changed outside Dagster."
    ),
)
def hbcd_daily_reidentification(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return reidentify_request(f"daily:{context.scheduled_execution_time.isoformat()}")
