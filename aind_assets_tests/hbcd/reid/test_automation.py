"""The HBCD automation conditions request what they should (Dagster's own evaluator, on a real
instance; events are reported as the runs and observers would report them)."""

from __future__ import annotations

import dagster as dg

from aind_assets.hbcd.definitions import ASSETS
from aind_assets.hbcd.keys import (
    BIDS_SESSIONS_NAME,
    CBRAIN_DERIVATIVES,
    LORIS_CHANGE_FEED,
    REIDENTIFIED_DERIVATIVES,
    SESSION_DERIVATIVES,
)
from aind_assets.hbcd.release.assets import release_ready_sessions, release_staging, release_summary
from aind_assets.hbcd.release.resources import RELEASES_NAME, STAGING_KEY, SUMMARY_KEY

NONE = dg.ResourceDefinition.none_resource()
DEFS = dg.Definitions(
    assets=[*ASSETS, release_ready_sessions, release_staging, release_summary],
    resources={"hbcd": NONE, "hbcd_release": NONE, "docdb": NONE},
)


class Automation:
    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.cursor = None

    def tick(self) -> dict[dg.AssetKey, set[str | None]]:
        result = dg.evaluate_automation_conditions(DEFS, self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {
            r.key: set(result.get_requested_partitions(r.key))
            for r in result.results
            if isinstance(r.key, dg.AssetKey) and result.get_num_requested(r.key)
        }


def test_reidentification_follows_derivatives() -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(BIDS_SESSIONS_NAME, ["sub-A_ses-V02", "sub-B_ses-V02"])
        auto = Automation(instance)
        assert auto.tick() == {}  # nothing happened yet

        # one session processed (the other has no derivatives: it must not hold anything back)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(SESSION_DERIVATIVES, partition="sub-A_ses-V02")
        )
        both = {REIDENTIFIED_DERIVATIVES: {None}, LORIS_CHANGE_FEED: {None}}
        assert auto.tick() == both  # one run: re-identify, then the change feed
        assert auto.tick() == {}  # requested once, not on every tick

        # new CBRAIN outputs seen by hbcd_cbrain_observer (an external materialization)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(CBRAIN_DERIVATIVES, tags={"dagster/data_version": "v1"})
        )
        assert auto.tick() == both
        assert auto.tick() == {}


def test_release_summary_follows_staging() -> None:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(RELEASES_NAME, ["1.0", "2.0"])
        auto = Automation(instance)
        assert auto.tick() == {}  # a new release is not staged by automation
        instance.report_runless_asset_event(dg.AssetMaterialization(STAGING_KEY, partition="2.0"))
        assert auto.tick() == {SUMMARY_KEY: {"2.0"}}
        assert auto.tick() == {}
