"""The dispatch of one partition: its jobs as ``AnalysisDispatchModel``s (pure: no Dagster).

For each spec entry of the partition (from the partition map), the spec's pipeline is re-run
for the partition's records only (:func:`paging.pipeline_for_changes`, so a group is always
whole and ``filter_latest`` still compares versions), the rows whose key is the partition's are
kept, their files are listed concurrently (``ObjectStoreResource.list_many``) and selected like
``glob("{location}/**/*{ext}")``, and the models are expanded per analysis of the spec and per
distributed parameter set, each carrying its ``analysis_code`` as analysis-pipeline-utils'
dispatcher builds it (analysis, inputs, merged parameters) — exactly the jobs the analysis
assets run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aind_assets.analysis import paging
from aind_assets.analysis.discovery import partition_key_of, records_by_id
from aind_assets.analysis.files import build_dispatch_models, expand_tasks, select_files
from aind_assets.analysis.inputs import row_problems
from aind_assets.analysis.models import AnalysisDispatchModel, DispatchConfig, DispatchSpec
from aind_assets.resources.urls import is_s3

if TYPE_CHECKING:
    from aind_assets.analysis.registry import AnalysisRegistry
    from aind_assets.resources.docdb import DocDBResource
    from aind_assets.resources.object_store import ObjectStoreResource

__all__ = ["PartitionDispatch", "dispatch_partition", "dispatch_partitions"]


@dataclass
class PartitionDispatch:
    """The jobs of one partition and what was left out, for metadata and warnings."""

    key: str
    models: list[AnalysisDispatchModel] = field(default_factory=list)
    specs: list[str] = field(default_factory=list)
    rows: int = 0
    assets: int = 0
    files: int = 0
    skipped_assets: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: bad input that fails the partition (a record without name or location, a location
    #: whose bucket or prefix does not exist): distinct from a skip
    errors: list[str] = field(default_factory=list)

    def tasks_per_analysis(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for model in self.models:
            name = model.analysis_code.name if model.analysis_code else "?"
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))


def dispatch_partitions(
    mappings: Mapping[str, Mapping[str, Any] | None],
    *,
    config: DispatchConfig,
    registry: AnalysisRegistry,
    docdb: DocDBResource,
    store: ObjectStoreResource,
    assets_collection: str,
) -> dict[str, PartitionDispatch]:
    """The jobs of several partitions (``{key: partition-map document}``).

    DocDB is asked per partition; the files of every asset of every partition are listed in one
    concurrent ``list_many``, so a run over many partitions lists in parallel.
    """
    outs = {key: PartitionDispatch(key=key) for key in mappings}
    pending: list[tuple[PartitionDispatch, DispatchSpec, list[dict[str, Any]]]] = []
    for key, mapping in mappings.items():
        out = outs[key]
        if mapping is None:
            out.warnings.append(
                f"partition {key!r} is not in the partition map: register it with the "
                "discovery sensor or `aind-assets partitions sync`"
            )
            continue
        for spec_name, entry in sorted((mapping.get("specs") or {}).items()):
            if spec_name not in config.names:
                out.warnings.append(f"dispatch spec {spec_name!r} is no longer configured: ignored")
                continue
            spec = config[spec_name]
            out.specs.append(spec_name)
            rows = _rows(key, spec, entry, out, docdb, assets_collection)
            if rows:
                pending.append((out, spec, rows))

    to_list = [
        loc
        for _, spec, rows in pending
        if spec.file_extension
        for r in rows
        for loc in r["s3_location"]
    ]
    listing = store.list_many(list(dict.fromkeys(to_list))) if to_list else {}

    for out, spec, rows in pending:
        # As the package: models carry the query when DocDB was queried, not for a CSV of ids.
        query = spec.resolved_query() if spec.asset_ids_csv is None else None
        locations = list(dict.fromkeys(loc for r in rows for loc in r["s3_location"]))
        out.rows += len(rows)
        out.assets += len(locations)
        files_by_location = None
        missing: set[str] = set()
        if spec.file_extension:
            why = {loc: why_missing(store, loc) for loc in locations if not listing[loc]}
            missing = {loc for loc, reason in why.items() if reason}
            out.errors.extend(_missing_location_errors(spec, rows, why))
            files_by_location = select_files(
                locations, spec.file_extension, lambda loc: [i.url for i in listing[loc]]
            )
            out.files += sum(len(v) for v in files_by_location.values())
        built = build_dispatch_models(
            rows, files_by_location, split_files=spec.split_files, query=query
        )
        missing_names = {
            n
            for r in rows
            for n, loc in zip(r["asset_name"], r["s3_location"], strict=False)
            if loc in missing
        }
        built = built._replace(skipped=[n for n in built.skipped if n not in missing_names])
        if built.skipped:
            out.skipped_assets.extend(built.skipped)
            out.warnings.append(
                f"{spec.name}: no *{spec.file_extension} file in "
                f"{', '.join(built.skipped)}: skipped"
            )
        for analysis in spec.analyses:
            definition = registry.get(analysis.name)
            for task in expand_tasks(built.models, analysis):
                code = definition.dispatch_code(task, analysis.fixed_parameters)
                out.models.append(task.model_copy(update={"analysis_code": code}))
    return outs


def _rows(
    key: str,
    spec: DispatchSpec,
    entry: Mapping[str, Any],
    out: PartitionDispatch,
    docdb: DocDBResource,
    assets_collection: str,
) -> list[dict[str, Any]]:
    """The spec's dispatch rows of partition ``key``, recomputed from DocDB."""
    ids = list(entry.get("docdb_record_id") or [])
    records = records_by_id(docdb, assets_collection, ids)
    if not records:
        out.warnings.append(
            f"{spec.name}: the DocDB records of partition {key!r} are gone ({len(ids)} ids)"
        )
        return []
    pipeline = paging.pipeline_for_changes(
        spec.resolved_query(), records, **spec.pipeline_options()
    )
    rows = []
    for r in docdb.aggregate(assets_collection, pipeline or []):
        problems = row_problems(r)
        if problems:
            if _row_may_be_key(r, spec, key):
                out.errors.extend(f"{spec.name}: {p}" for p in problems)
            continue
        if partition_key_of(r, spec) == key:
            rows.append(r)
    if out.errors:
        return []
    if not rows:
        out.warnings.append(
            f"{spec.name}: DocDB no longer selects partition {key!r} (records changed, no "
            "longer match the query, or a newer version superseded them)"
        )
    return sorted(rows, key=lambda r: sorted(map(str, r["asset_name"])))


def _row_may_be_key(row: Mapping[str, Any], spec: DispatchSpec, key: str) -> bool:
    """A row with a bad record belongs to partition ``key`` when its key can be computed and
    is ``key``, or cannot be computed (no name): the records were asked for by ``key``."""
    try:
        return partition_key_of(row, spec) == key
    except (ValueError, TypeError):
        return True


def why_missing(store: ObjectStoreResource, location: str) -> str | None:
    """Why a location whose listing is empty does not exist, or ``None`` when it does (a local
    directory without files). On S3 a prefix exists only through its objects."""
    if not is_s3(location):
        return None if os.path.isdir(location) else "no such directory"
    bucket = location[len("s3://") :].split("/", 1)[0]
    try:
        bucket_exists = store.exists(f"s3://{bucket}")
    except (OSError, PermissionError):
        bucket_exists = True  # cannot tell: say what is certain
    return "no object under this prefix" if bucket_exists else f"no bucket {bucket!r}"


def _missing_location_errors(
    spec: DispatchSpec, rows: list[dict[str, Any]], why: Mapping[str, str | None]
) -> list[str]:
    errors = []
    for row in rows:
        for rid, name, loc in zip(
            row["docdb_record_id"], row["asset_name"], row["s3_location"], strict=False
        ):
            if why.get(loc):
                errors.append(
                    f"{spec.name}: location {loc} of data asset {name} (DocDB record {rid}) does "
                    f"not exist ({why[loc]}); an existing location without "
                    f"*{spec.file_extension} files is skipped, not failed"
                )
    return errors


def dispatch_partition(
    key: str, mapping: Mapping[str, Any] | None, **kwargs: Any
) -> PartitionDispatch:
    """The jobs of partition ``key`` given its partition-map document ``mapping``."""
    return dispatch_partitions({key: mapping}, **kwargs)[key]
