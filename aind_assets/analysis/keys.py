"""Names of the analysis flow in Dagster: one partition set, one job and one set of assets per
dispatch spec.

A dispatch spec decides what a partition *is* (a data asset, or a group such as a subject), so
each spec has its own dynamic partitions definition, named after the spec. Its assets share it:

* ``analysis/<spec>/data_assets`` — the spec's DocDB data assets, an observable source asset
  (data version per partition: the hash of the partition's DocDB records, recorded by the
  discovery sensor with :func:`observation`; built by :func:`.defs.build_source_asset`);
* ``analysis/<spec>/dispatch`` — the partition's jobs;
* ``analysis/<spec>/<analysis>`` — one asset per analysis the spec runs.

So every asset's partitions page lists only the partitions it runs on, and an analysis run by
two specs (``behavior_performance`` on sessions and on subjects) is two assets, each reaching
100 %. The job ``analysis_<spec>`` runs the spec's dispatch and analyses; the discovery sensor
``discover_<spec>`` requests its runs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from aind_assets.analysis.models import DispatchSpec

#: The asset group of the flow (one lineage view: source -> dispatch -> analyses).
GROUP = "aind_analysis"
#: Asset tag naming the dispatch spec of an asset.
SPEC_TAG = "aind/dispatch_spec"


@functools.cache
def partitions_def(spec: str) -> dg.DynamicPartitionsDefinition:
    """The dynamic partitions of dispatch spec ``spec`` (named after it)."""
    return dg.DynamicPartitionsDefinition(name=spec)


def partitions_name(spec: str) -> str:
    return spec


def source_key(spec: str) -> dg.AssetKey:
    return dg.AssetKey(["analysis", spec, "data_assets"])


def dispatch_key(spec: str) -> dg.AssetKey:
    return dg.AssetKey(["analysis", spec, "dispatch"])


def analysis_key(spec: str, analysis: str) -> dg.AssetKey:
    return dg.AssetKey(["analysis", spec, analysis])


def job_name(spec: str) -> str:
    return f"analysis_{spec}"


def op_name(key: dg.AssetKey) -> str:
    """The op (step) name of an asset: its key joined by ``__`` (for run config)."""
    return "__".join(key.path)


def asset_tags(spec: DispatchSpec, analysis: str | None = None) -> dict[str, str]:
    """Tags of the spec's assets (filter the catalog by flow, spec or analysis)."""
    tags = {"aind/flow": "analysis", SPEC_TAG: spec.name}
    return {**tags, "aind/analysis": analysis} if analysis else tags


def asset_kinds(spec: DispatchSpec, storage_kind: str | None) -> set[str]:
    """Kinds shown on the spec's assets: python, the store (s3) and the file type (nwb)."""
    kinds = {"python"}
    if storage_kind:
        kinds.add(storage_kind)
    ext = (spec.file_extension or "").lstrip(".").lower()
    if ext in {"nwb", "zarr", "csv", "json", "parquet"}:
        kinds.add(ext)
    return kinds


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


__all__ = [
    "DATA_VERSION_TAG",
    "member_versions",
    "observation",
    "GROUP",
    "SPEC_TAG",
    "analysis_key",
    "asset_kinds",
    "asset_tags",
    "dispatch_key",
    "job_name",
    "op_name",
    "partitions_def",
    "partitions_name",
    "source_key",
]
