"""The HBCD flow's declarative automation: one automation-condition sensor, running by default,
evaluates the conditions declared on the HBCD assets (re-identification, its change feed, the
release summary). Dagster's default automation sensor starts stopped, and an explicit sensor
also tags the runs it requests like every other automated HBCD run (``aind/flow: hbcd``, below
people's runs), so the flow's concurrency limit and priority apply.

What stays in sensors, and why, is in ``docs/hbcd.md`` ("Automation").
"""

import dagster as dg

from aind_assets.hbcd.keys import AUTOMATED_TAGS, GROUP
from aind_assets.hbcd.release.resources import GROUP as RELEASE_GROUP

#: The HBCD groups: the sensor evaluates the conditions of their assets that declare one (by
#: group, so a definitions set without release staging, as in tests, still loads).
AUTOMATED = dg.AssetSelection.groups(GROUP, RELEASE_GROUP)

hbcd_automation = dg.AutomationConditionSensorDefinition(
    "hbcd_automation",
    target=AUTOMATED,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    run_tags=AUTOMATED_TAGS,
    description=(
        "Declarative automation of the HBCD flow: re-identify after derivatives changed, then "
        "write the LORIS change feed; summarize a release after it was staged."
    ),
)
