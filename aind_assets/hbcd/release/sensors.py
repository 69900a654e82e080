"""The release-spec sensor: every valid spec under the specs root becomes an ``hbcd_releases``
partition (invalid ones are logged with their error and skipped).
"""

import dagster as dg

from aind_assets.hbcd.release.resources import RELEASES, RELEASES_NAME, HbcdReleaseResource
from aind_assets.hbcd.release.specs import list_specs


@dg.sensor(
    name="hbcd_release_specs",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Register every valid release spec under the specs root as an hbcd_releases partition "
        "(invalid specs are logged with their error and skipped); staging stays a person's run."
    ),
)
def release_specs_sensor(
    context: dg.SensorEvaluationContext, hbcd_release: HbcdReleaseResource
) -> dg.SensorResult:
    specs, errors = list_specs(hbcd_release.object_store, hbcd_release.specs_root)
    for url, error in sorted(errors.items()):
        context.log.warning(f"skipping invalid release spec {url}: {error}")
    known = set(context.instance.get_dynamic_partitions(RELEASES_NAME))
    new = sorted(set(specs) - known)
    if not new:
        return dg.SensorResult(skip_reason=f"no new release spec ({len(specs)} registered)")
    context.log.info(f"registering release partition(s): {', '.join(new)}")
    return dg.SensorResult(dynamic_partitions_requests=[RELEASES.build_add_request(new)])
