"""The DocDB data assets of a dispatch spec as an observable source asset, with a data version
per partition.

A partition's data version is the hash of its DocDB members (ids, names, locations and group
metadata: :attr:`DiscoveredPartition.members_hash`), so it changes exactly when discovery sees
the partition change (a new session joins a subject, a record moves). Dagster then marks the
partition's ``dispatch`` (and through it the analyses) stale in the UI.

Two ways a version is recorded, both per partition (Dagster 1.13 supports partitioned
observations of a source asset: ``DataVersionsByPartition``):

* the discovery sensor reports an observation for every new or changed partition of its tick
  (``SensorResult(asset_events=...)``), so versions follow DocDB without extra work;
* "Observe" in the UI (or a job selecting the source) reads the spec's partition map and
  reports every registered partition's version.

Discovery itself stays a sensor: it *adds* dynamic partitions, which no automation condition
can do.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import dagster as dg

from aind_assets.analysis.keys import GROUP, SPEC_TAG, partitions_def, source_key
from aind_assets.analysis.models import DispatchSpec
from aind_assets.analysis.resources import AnalysisResource

#: The tag Dagster reads an observation's data version from (what ``DataVersion`` becomes).
DATA_VERSION_TAG = "dagster/data_version"


def member_versions(chunks: Iterable[Mapping]) -> dict[str, str]:
    """``{key: members hash}`` of a spec's partition-map chunks (oldest first: newest wins)."""
    versions: dict[str, str] = {}
    for chunk in chunks:
        for entry in chunk.get("entries") or []:
            if entry.get("key") and entry.get("members"):
                versions[entry["key"]] = str(entry["members"])
    return versions


def observation(spec: str, key: str, version: str) -> dg.AssetObservation:
    """The observation of one partition of the spec's data assets (for a sensor's result)."""
    return dg.AssetObservation(
        asset_key=source_key(spec),
        partition=key,
        tags={DATA_VERSION_TAG: version},
    )


def build_source_asset(spec: DispatchSpec) -> dg.SourceAsset:
    """``analysis/<spec>/data_assets``: the DocDB records the spec selects, by partition."""
    with warnings.catch_warnings():  # observable_source_asset is "beta" in Dagster 1.13
        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        return _source_asset(spec)


def _source_asset(spec: DispatchSpec) -> dg.SourceAsset:
    what = "group (" + ", ".join(spec.group_by) + ")" if spec.group_by else "data asset"

    @dg.observable_source_asset(
        key=source_key(spec.name),
        partitions_def=partitions_def(spec.name),
        group_name=GROUP,
        description=(
            f"DocDB data assets selected by dispatch spec `{spec.name}`, one partition per "
            f"{what}. The data version of a partition is the hash of its DocDB records; the "
            f"sensor `discover_{spec.name}` records it when the records change."
        ),
        metadata={
            "dispatch_spec": spec.name,
            "query": dg.MetadataValue.json(spec.resolved_query()),
        },
        # kinds are tags on a source asset (its decorator has no ``kinds``)
        tags={"aind/flow": "analysis", SPEC_TAG: spec.name, "dagster/kind/mongodb": ""},
    )
    def _observe(
        context: dg.AssetExecutionContext, analysis: AnalysisResource
    ) -> dg.DataVersionsByPartition:
        registered = set(context.instance.get_dynamic_partitions(spec.name))
        pmap = analysis.partition_map()
        chunks: list[Mapping] = []
        after = None
        while page := pmap.chunks(spec.name, after=after, limit=100):
            chunks.extend(page)
            after = page[-1]["_id"]
        versions = {
            k: dg.DataVersion(v) for k, v in member_versions(chunks).items() if k in registered
        }
        context.log.info(f"{spec.name}: data versions of {len(versions)} partition(s)")
        return dg.DataVersionsByPartition(versions)

    return _observe


__all__ = ["DATA_VERSION_TAG", "build_source_asset", "member_versions", "observation"]
