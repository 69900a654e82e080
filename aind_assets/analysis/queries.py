"""DocDB aggregation pipelines for the AIND analysis flow (pure: no I/O to servers, no Dagster).

What the dispatcher asks DocDB
------------------------------
:func:`build_pipeline` returns the one aggregation pipeline that turns a user's data-asset query
into dispatch rows (``s3_location`` / ``asset_name`` / ``docdb_record_id`` lists, plus
``group_metadata`` when grouping), stage for stage like analysis-pipeline-utils' dispatcher::

    $match query
    $match {f: {$ne: null}}        drop_null_groups, for every filter_by + group_by field
    $sort {latest: -1}             filter_latest: keep the newest record per filter_by key
    $group {_id: [filter_by], record: {$first: $$ROOT}}
    $replaceRoot {newRoot: $record}
    $addFields {f: wrap-if-not-array}   unwind_list_fields, each followed by
    $unwind $f
    $group by group_by             pushes location/_id/name; dotted fields carried as a__b ...
    $addFields {group_metadata}    ... folded into group_metadata ...
    $project {a__b: 0}             ... and removed from the top level
    $project {s3_location: [$location], docdb_record_id: [$_id], asset_name: [$name]}
                                   (instead of the three grouping stages when not grouping)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aind_assets.analysis.inputs import parse_asset_ids_csv
from aind_assets.textfiles import TextInputError, decode_text

#: The DocDB field holding a data asset's Code Ocean id (what a CSV of ``asset_id`` refers to).
CODE_OCEAN_ID_FIELD = "external_links.Code Ocean.0"
#: The field ``filter_latest=True`` sorts on (newest first). A string ``filter_latest`` names
#: another field, as in analysis-pipeline-utils where ``filter_latest`` *is* the field name.
DEFAULT_LATEST_FIELD = "created"


class QueryError(ValueError):
    """A query, CSV of asset ids or pipeline option is unusable; the message says where."""


# --------------------------------------------------------------------------------------------
# The dispatch pipeline
# --------------------------------------------------------------------------------------------


def latest_field(filter_latest: bool | str | None) -> str | None:
    if filter_latest is None or filter_latest is False:
        return None
    if filter_latest is True:
        return DEFAULT_LATEST_FIELD
    if isinstance(filter_latest, str) and filter_latest.strip():
        return filter_latest
    raise QueryError(f"filter_latest must be a bool or a field name, got {filter_latest!r}")


def _check_fields(name: str, fields: Sequence[str] | None) -> list[str]:
    if fields is None:
        return []
    if isinstance(fields, str):
        raise QueryError(f"{name} must be a list of field names, got the string {fields!r}")
    out = list(fields)
    for f in out:
        if not isinstance(f, str) or not f or f.startswith("$"):
            raise QueryError(f"{name}: {f!r} is not a field name")
    return out


def _unwind_stages(fields: Sequence[str]) -> list[dict[str, Any]]:
    stages: list[dict[str, Any]] = []
    for field in fields:
        ref = f"${field}"
        stages.append(
            {
                "$addFields": {
                    field: {"$cond": {"if": {"$isArray": ref}, "then": ref, "else": [ref]}}
                }
            }
        )
        stages.append({"$unwind": ref})
    return stages


def _group_stages(group_by: Sequence[str]) -> list[dict[str, Any]]:
    carried = [f.replace(".", "__") for f in group_by]
    group: dict[str, Any] = {
        "_id": [f"${f}" for f in group_by],
        "s3_location": {"$push": "$location"},
        "docdb_record_id": {"$push": "$_id"},
        "asset_name": {"$push": "$name"},
    }
    for field, name in zip(group_by, carried, strict=True):
        group[name] = {"$first": f"${field}"}
    return [
        {"$group": group},
        {"$addFields": {"group_metadata": {name: f"${name}" for name in carried}}},
        {"$project": {name: 0 for name in carried}},
    ]


def build_stages(
    query: Mapping[str, Any],
    *,
    group_by: Sequence[str] | None,
    filter_latest: bool | str | None,
    filter_by: Sequence[str] | None,
    unwind_list_fields: Sequence[str] | None,
    drop_null_groups: bool,
    after_unwind: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    if not isinstance(query, Mapping):
        raise QueryError(f"query must be a mapping (a JSON object), got {type(query).__name__}")
    group_by = _check_fields("group_by", group_by)
    filter_by = _check_fields("filter_by", filter_by)
    unwind = _check_fields("unwind_list_fields", unwind_list_fields)
    latest = latest_field(filter_latest)
    if latest and not filter_by:
        raise QueryError(
            "filter_latest needs filter_by: name the field(s) whose records are versions of one "
            "another (e.g. filter_by: [data_description.input_data_name]); the newest record by "
            f"{latest!r} is kept for each filter_by value"
        )

    pipeline: list[dict[str, Any]] = [{"$match": dict(query)}]
    null_fields = filter_by + group_by
    if drop_null_groups and null_fields:
        pipeline.append({"$match": {f: {"$ne": None} for f in null_fields}})
    if latest:
        pipeline.append({"$sort": {latest: -1}})
        pipeline.append(
            {"$group": {"_id": [f"${f}" for f in filter_by], "record": {"$first": "$$ROOT"}}}
        )
        pipeline.append({"$replaceRoot": {"newRoot": "$record"}})
    pipeline.extend(_unwind_stages(unwind))
    if after_unwind:
        pipeline.append({"$match": dict(after_unwind)})
    if group_by:
        pipeline.extend(_group_stages(group_by))
    else:
        pipeline.append(
            {
                "$project": {
                    "s3_location": ["$location"],
                    "docdb_record_id": ["$_id"],
                    "asset_name": ["$name"],
                }
            }
        )
    return pipeline


def build_pipeline(
    query: Mapping[str, Any],
    *,
    group_by: Sequence[str] | None = None,
    filter_latest: bool | str | None = False,
    filter_by: Sequence[str] | None = None,
    unwind_list_fields: Sequence[str] | None = None,
    drop_null_groups: bool = True,
) -> list[dict[str, Any]]:
    """The dispatch aggregation pipeline for ``query`` (see the module docstring for the stages).

    ``filter_latest``: ``True`` sorts on :data:`DEFAULT_LATEST_FIELD` (``created``); a string names
    the field to sort on (analysis-pipeline-utils' meaning). It requires ``filter_by``.
    ``drop_null_groups`` defaults to True, here and in ``DispatchSpec``, as in
    analysis-pipeline-utils' ``query_data_assets``.
    """
    return build_stages(
        query,
        group_by=group_by,
        filter_latest=filter_latest,
        filter_by=filter_by,
        unwind_list_fields=unwind_list_fields,
        drop_null_groups=drop_null_groups,
    )


# --------------------------------------------------------------------------------------------
# Query inputs: JSON text/file, CSV of asset ids
# --------------------------------------------------------------------------------------------


def _looks_like_path(value: str | os.PathLike[str]) -> bool:
    if isinstance(value, os.PathLike):
        return True
    return "\n" not in value and len(value) < 4096 and Path(value).is_file()


def parse_query(json_text_or_path: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A DocDB query from JSON text or a JSON file (a mapping is returned as a copy).

    A ``str`` naming an existing file is read, as the real dispatcher does; anything else is JSON.
    Bad JSON raises :class:`QueryError` naming the source, line and column.
    """
    if isinstance(json_text_or_path, Mapping):
        return dict(json_text_or_path)
    if _looks_like_path(json_text_or_path):
        source = str(json_text_or_path)
        try:
            text = Path(json_text_or_path).read_text(encoding="utf-8")
        except OSError as exc:
            raise QueryError(f"cannot read query file {source}: {exc}") from exc
    else:
        source, text = "query text", str(json_text_or_path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QueryError(
            f"invalid JSON in {source} at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(value, dict):
        raise QueryError(f"the query in {source} must be a JSON object, got {type(value).__name__}")
    return value


def read_asset_ids_csv(text_or_path: str | os.PathLike[str]) -> list[str]:
    """Asset ids from the ``asset_id`` column of a CSV (text or file): stripped, blanks skipped,
    duplicates dropped (first occurrence kept), each with a warning naming the lines; any other
    problem (encoding, quoting, not an id) raises :class:`QueryError` naming the file and line
    (see :func:`aind_assets.analysis.inputs.parse_asset_ids_csv`)."""
    if _looks_like_path(text_or_path):
        source = str(text_or_path)
        try:
            text = decode_text(Path(text_or_path).read_bytes(), f"asset id CSV {source}")
        except OSError as exc:
            raise QueryError(f"cannot read asset id CSV {source}: {exc}") from exc
        except TextInputError as exc:
            raise QueryError(str(exc)) from None
    else:
        source, text = "CSV text", str(text_or_path).lstrip("\ufeff")
    try:
        return parse_asset_ids_csv(text, source)
    except ValueError as exc:
        raise QueryError(str(exc)) from None


def query_from_csv(text_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"external_links.Code Ocean.0": {"$in": ids}}`` for the ``asset_id`` column of a CSV."""
    return {CODE_OCEAN_ID_FIELD: {"$in": read_asset_ids_csv(text_or_path)}}
