"""Sensor, schedule and job of the re-identification stage: ``hbcd_reidentify_sensor`` and
``hbcd_daily_reidentification`` request ``hbcd/reidentified_derivatives`` after derivatives
changed (and daily).
"""

import dagster as dg

from aind_assets.hbcd.keys import (
    AUTOMATED_TAGS,
    CBRAIN_DERIVATIVES,
    FLOW_TAGS,
    LORIS_CHANGE_FEED,
    REIDENTIFIED_DERIVATIVES,
    SESSION_DERIVATIVES,
)

reidentify_job = dg.define_asset_job(
    "hbcd_reidentify_derivatives",
    selection=dg.AssetSelection.assets(REIDENTIFIED_DERIVATIVES, LORIS_CHANGE_FEED),
    tags=FLOW_TAGS,
)


# --- re-identification --------------------------------------------------------------------


def reidentify_request(run_key: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=[REIDENTIFIED_DERIVATIVES, LORIS_CHANGE_FEED],
        tags=AUTOMATED_TAGS,
    )


@dg.sensor(
    name="hbcd_reidentify_sensor",
    target=dg.AssetSelection.assets(REIDENTIFIED_DERIVATIVES, LORIS_CHANGE_FEED),
    minimum_interval_seconds=600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Derivatives changed (processed, or CBRAIN outputs observed) -> re-identify.",
)
def hbcd_reidentify_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    after = int(context.cursor) if context.cursor else None
    latest = after or 0
    for fetch, key in (
        (context.instance.fetch_materializations, SESSION_DERIVATIVES),
        (context.instance.fetch_observations, CBRAIN_DERIVATIVES),
    ):
        records = fetch(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=1, ascending=False
        ).records
        if records:
            latest = max(latest, records[0].storage_id)
    if latest == (after or 0):
        return dg.SensorResult(skip_reason=dg.SkipReason("no derivative changed"))
    return dg.SensorResult(
        run_requests=[reidentify_request(f"reidentify:{latest}")], cursor=str(latest)
    )


@dg.schedule(
    name="hbcd_daily_reidentification",
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    target=dg.AssetSelection.assets(REIDENTIFIED_DERIVATIVES, LORIS_CHANGE_FEED),
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def hbcd_daily_reidentification(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return reidentify_request(f"daily:{context.scheduled_execution_time.isoformat()}")
