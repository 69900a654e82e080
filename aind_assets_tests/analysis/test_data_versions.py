"""Data versions of the DocDB data assets: the discovery sensor records one per new or changed
partition; observing the source asset (UI "Observe") reports the same, per partition."""

from __future__ import annotations

import dagster as dg

from aind_assets.analysis.defs import build_source_asset
from aind_assets_tests.analysis.test_flow import CONFIG, apply, expected_keys, tick


def test_observing_the_source_gives_each_partition_its_data_version(world, instance):
    """ "Observe" on analysis/<spec>/data_assets reports one data version per registered
    partition (the hash of its DocDB members), as the sensor does for new or changed ones."""
    world.seed(files=False)
    result = tick(world, instance, "foraging_by_subject", None)
    apply(instance, result)
    source = build_source_asset(CONFIG["foraging_by_subject"])
    defs = dg.Definitions(
        assets=[source],
        jobs=[dg.define_asset_job("observe", selection=[source.key])],
        resources={"analysis": world.resources()["analysis"]},
    )
    some_key = instance.get_dynamic_partitions("foraging_by_subject")[0]
    observed = defs.resolve_job_def("observe").execute_in_process(
        instance=instance, partition_key=some_key
    )
    assert observed.success
    versions = {
        e.partition: e.tags["dagster/data_version"]
        for e in observed.get_asset_observation_events()
        for e in [e.asset_observation_data.asset_observation]
    }
    pmap = world.resource.partition_map()
    assert sorted(versions) == expected_keys(world, "foraging_by_subject")
    for key, version in versions.items():
        assert version == pmap.get(key)["specs"]["foraging_by_subject"]["members"]
    # the same versions the sensor recorded when it registered them
    assert versions == {e.partition: e.tags["dagster/data_version"] for e in result.asset_events}
