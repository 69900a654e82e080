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

Incremental discovery (for the sensor)
--------------------------------------
A sensor tick must cost what is *new*, not what *exists*, so discovery pages through DocDB by
``(last_modified, _id)`` and runs the dispatch pipeline only for what a page touched. It is two
queries per page, on purpose:

1. :func:`pipeline_for_page` — a cheap *probe*: the user's query AND "after the cursor", sorted by
   ``last_modified, _id``, limited to ``page_size``, projected to ``_id``, ``last_modified``,
   ``name`` and the fields that decide grouping. With an index on ``(last_modified, _id)`` this
   reads ``page_size`` small documents. :func:`next_cursor` takes the last row's
   ``(last_modified, _id)``: the sort is on exactly those keys, so that is the page's maximum.
2. :func:`pipeline_for_changes` — the full :func:`build_pipeline`, restricted to the page:
   by ``_id`` when rows are dispatched one record at a time; by the *affected keys* when the
   output row depends on other records (``group_by``: the whole group must be recomputed;
   ``filter_latest``: all versions with the same ``filter_by`` key must be compared). The
   restriction is a ``$in`` on each key field, which selects every member of each affected group
   (so no group comes out partial), and is repeated after ``$unwind`` so that unwound elements of
   other groups are dropped.

Why not a single paged pipeline? ``$limit`` after ``$group`` pages *groups*, not records, and the
cursor could then not say which records were seen; ``$limit`` before ``$group`` cuts groups in
half. Splitting "which records are new" (paged, cursor-able) from "what must be recomputed"
(exact, bounded by the page's keys) keeps both correct.

Limits, documented rather than hidden: records must have ``last_modified`` (AIND records do);
a record edited so that it *leaves* a group re-triggers only its new group; with both
``filter_latest`` and ``group_by`` the restriction is on ``group_by`` and assumes all versions of a
``filter_by`` key share their ``group_by`` values (e.g. filter_by session, group_by subject).

Partition keys
--------------
:func:`partition_key_for` makes a Dagster-safe, deterministic, readable key from an asset name or a
group's values; :func:`group_key` is the canonical identity of a group's values.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aind_assets.analysis.inputs import parse_asset_ids_csv
from aind_assets.textfiles import TextInputError, decode_text

__all__ = [
    "CODE_OCEAN_ID_FIELD",
    "DEFAULT_LATEST_FIELD",
    "PAGE_SORT",
    "Cursor",
    "QueryError",
    "affected_restriction",
    "build_pipeline",
    "decode_cursor",
    "encode_cursor",
    "get_path_values",
    "group_key",
    "incremental_match",
    "next_cursor",
    "page_stages",
    "parse_query",
    "partition_key_for",
    "pipeline_for_changes",
    "pipeline_for_page",
    "query_from_csv",
    "read_asset_ids_csv",
    "restriction_fields",
]

#: The DocDB field holding a data asset's Code Ocean id (what a CSV of ``asset_id`` refers to).
CODE_OCEAN_ID_FIELD = "external_links.Code Ocean.0"
#: The field ``filter_latest=True`` sorts on (newest first). A string ``filter_latest`` names
#: another field, as in analysis-pipeline-utils where ``filter_latest`` *is* the field name.
DEFAULT_LATEST_FIELD = "created"
#: The order discovery pages in; the cursor is the last ``(last_modified, _id)`` of a page.
PAGE_SORT: dict[str, Any] = {"$sort": {"last_modified": 1, "_id": 1}}

#: ``(last_modified, _id)`` of the last record seen.
Cursor = tuple[Any, Any]


class QueryError(ValueError):
    """A query, CSV of asset ids or pipeline option is unusable; the message says where."""


# --------------------------------------------------------------------------------------------
# The dispatch pipeline
# --------------------------------------------------------------------------------------------


def _latest_field(filter_latest: bool | str | None) -> str | None:
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


def _build(
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
    latest = _latest_field(filter_latest)
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
    drop_null_groups: bool = False,
) -> list[dict[str, Any]]:
    """The dispatch aggregation pipeline for ``query`` (see the module docstring for the stages).

    ``filter_latest``: ``True`` sorts on :data:`DEFAULT_LATEST_FIELD` (``created``); a string names
    the field to sort on (analysis-pipeline-utils' meaning). It requires ``filter_by``.
    ``drop_null_groups`` defaults to False here and in ``DispatchSpec`` (analysis-pipeline-utils'
    ``query_data_assets`` defaults to True): set it to drop records missing a grouping field.
    """
    return _build(
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


# --------------------------------------------------------------------------------------------
# Incremental paging
# --------------------------------------------------------------------------------------------


def incremental_match(cursor: Cursor | None) -> dict[str, Any] | None:
    """The ``$match`` stage selecting records strictly after ``cursor = (last_modified, _id)``.

    ``None`` (no cursor yet) needs no stage and returns ``None``.
    """
    if cursor is None:
        return None
    last_modified, record_id = cursor
    return {
        "$match": {
            "$or": [
                {"last_modified": {"$gt": last_modified}},
                {"last_modified": last_modified, "_id": {"$gt": record_id}},
            ]
        }
    }


def page_stages(page_size: int) -> list[dict[str, Any]]:
    """``$sort {last_modified: 1, _id: 1}`` then ``$limit page_size``."""
    if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
        raise QueryError(f"page_size must be a positive integer, got {page_size!r}")
    return [dict(PAGE_SORT), {"$limit": page_size}]


def _and(*queries: Mapping[str, Any] | None) -> dict[str, Any]:
    parts = [dict(q) for q in queries if q]
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    return {"$and": parts}


_OPTIONS = frozenset(
    {"group_by", "filter_latest", "filter_by", "unwind_list_fields", "drop_null_groups"}
)


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise TypeError(
            f"unknown pipeline option(s) {', '.join(unknown)}; "
            f"expected {', '.join(sorted(_OPTIONS))}"
        )


def restriction_fields(
    *,
    group_by: Sequence[str] | None = None,
    filter_latest: bool | str | None = False,
    filter_by: Sequence[str] | None = None,
    **options: Any,
) -> list[str] | None:
    """The fields whose values decide which dispatch rows a changed record affects.

    ``group_by`` when grouping, else ``filter_by`` when keeping the latest version, else ``None``
    (each record is its own row: restrict by ``_id``). Other ``build_pipeline`` options are
    accepted and ignored.
    """
    _check_options(options)
    if group_by:
        return list(group_by)
    if _latest_field(filter_latest):
        if not filter_by:
            raise QueryError("filter_latest needs filter_by")
        return list(filter_by)
    return None


def _without_overlaps(fields: Iterable[str]) -> list[str]:
    """Drop duplicates and fields below another listed field (MongoDB rejects path collisions)."""
    unique = list(dict.fromkeys(fields))
    return [f for f in unique if not any(f != o and f.startswith(o + ".") for o in unique)]


def pipeline_for_page(
    spec_query: Mapping[str, Any],
    cursor: Cursor | None,
    page_size: int,
    *,
    extra_fields: Sequence[str] = (),
    **options: Any,
) -> list[dict[str, Any]]:
    """Probe pipeline for one discovery page.

    (a) matches ``spec_query`` AND "after ``cursor``", (b) sorts by ``last_modified, _id``,
    (c) limits to ``page_size``, and projects each record to ``_id``, ``last_modified``, ``name``,
    the fields :func:`restriction_fields` needs for ``options`` (the ``build_pipeline``
    keyword arguments) and ``extra_fields``. Feed its rows to :func:`next_cursor` and
    :func:`pipeline_for_changes`.
    """
    after = incremental_match(cursor)
    match = _and(spec_query, after["$match"] if after else None)
    keys = restriction_fields(**options) or []
    fields = ["_id", "last_modified", "name", *keys, *extra_fields]
    projection = {f: 1 for f in _without_overlaps(fields)}
    return [{"$match": match}, *page_stages(page_size), {"$project": projection}]


def next_cursor(
    page_rows: Sequence[Mapping[str, Any]], previous: Cursor | None = None
) -> Cursor | None:
    """The cursor after a page (rows in :data:`PAGE_SORT` order): its last ``(last_modified, _id)``,
    or ``previous`` when the page is empty."""
    if not page_rows:
        return previous
    last = page_rows[-1]
    if last.get("last_modified") is None:
        raise QueryError(
            f"record {last.get('_id')!r} has no last_modified: it cannot be paged incrementally"
        )
    return (last["last_modified"], last["_id"])


def get_path_values(doc: Any, dotted: str) -> list[Any]:
    """All values at a dotted path, MongoDB style: arrays on the way are traversed (numeric parts
    index them), an array at the end contributes its elements. Missing paths give ``[]``."""
    current = [doc]
    for part in dotted.split("."):
        nxt: list[Any] = []
        for value in current:
            if isinstance(value, Mapping):
                if part in value:
                    nxt.append(value[part])
            elif isinstance(value, list):
                if part.isdigit():
                    index = int(part)
                    if index < len(value):
                        nxt.append(value[index])
                else:
                    nxt.extend(v[part] for v in value if isinstance(v, Mapping) and part in v)
        current = nxt
    out: list[Any] = []
    for value in current:
        if isinstance(value, list):
            out.extend(value)
        else:
            out.append(value)
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def affected_restriction(
    page_rows: Sequence[Mapping[str, Any]], **options: Any
) -> dict[str, Any] | None:
    """The query selecting every record whose dispatch row a page's records may change.

    ``{"_id": {"$in": ids}}`` for per-record rows; otherwise ``{f: {"$in": values}}`` for each
    :func:`restriction_fields` field (``None`` included when a record lacks the field).
    ``None`` for an empty page.
    """
    if not page_rows:
        return None
    fields = restriction_fields(**options)
    if fields is None:
        return {"_id": {"$in": list(dict.fromkeys(row["_id"] for row in page_rows))}}
    restriction: dict[str, Any] = {}
    for field in fields:
        values: dict[str, Any] = {}
        for row in page_rows:
            found = get_path_values(row, field) or [None]
            for value in found:
                values.setdefault(_canonical(value), value)
        restriction[field] = {"$in": [values[k] for k in sorted(values)]}
    return restriction


def pipeline_for_changes(
    spec_query: Mapping[str, Any],
    page_rows: Sequence[Mapping[str, Any]],
    **options: Any,
) -> list[dict[str, Any]] | None:
    """The dispatch pipeline (:func:`build_pipeline` with ``options``) restricted to what the
    probe rows of :func:`pipeline_for_page` affect; ``None`` for an empty page.

    Grouped pipelines get the restriction twice: ANDed into the first ``$match`` (index-friendly,
    selects whole groups) and again after ``$unwind`` (drops unwound elements that belong to groups
    the page did not touch, which would otherwise come out partial).
    """
    _check_options(options)
    restriction = affected_restriction(page_rows, **options)
    if restriction is None:
        return None
    after_unwind = (
        restriction if options.get("group_by") and options.get("unwind_list_fields") else None
    )
    return _build(
        _and(spec_query, restriction),
        group_by=options.get("group_by"),
        filter_latest=options.get("filter_latest", False),
        filter_by=options.get("filter_by"),
        unwind_list_fields=options.get("unwind_list_fields"),
        drop_null_groups=options.get("drop_null_groups", False),
        after_unwind=after_unwind,
    )


def _to_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def encode_cursor(cursor: Cursor | None) -> str | None:
    """A cursor as a string for a Dagster sensor. Datetimes are stored as UTC (naive ones, as
    pymongo returns them by default, are taken to be UTC); ``_id`` may be a str or an ObjectId."""
    if cursor is None:
        return None
    last_modified, record_id = cursor
    payload: dict[str, Any] = {}
    if isinstance(last_modified, datetime):
        payload["last_modified"] = {"$date": _to_utc(last_modified).isoformat()}
    elif isinstance(last_modified, str | int | float):
        payload["last_modified"] = last_modified
    else:
        raise QueryError(f"cannot encode last_modified of type {type(last_modified).__name__}")
    if isinstance(record_id, str | int):
        payload["_id"] = record_id
    elif type(record_id).__name__ == "ObjectId":
        payload["_id"] = {"$oid": str(record_id)}
    else:
        raise QueryError(f"cannot encode _id of type {type(record_id).__name__}")
    return json.dumps(payload, sort_keys=True)


def decode_cursor(text: str | None) -> Cursor | None:
    """Inverse of :func:`encode_cursor` (``None`` or ``""`` → ``None``)."""
    if not text:
        return None
    try:
        payload = json.loads(text)
        last_modified = payload["last_modified"]
        record_id = payload["_id"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise QueryError(f"not a discovery cursor: {text!r}") from exc
    if isinstance(last_modified, dict) and "$date" in last_modified:
        last_modified = datetime.fromisoformat(last_modified["$date"])
    if isinstance(record_id, dict) and "$oid" in record_id:
        from bson import ObjectId

        record_id = ObjectId(record_id["$oid"])
    return (last_modified, record_id)


# --------------------------------------------------------------------------------------------
# Group identity and Dagster partition keys
# --------------------------------------------------------------------------------------------


def group_key(record_group_values: Mapping[str, Any] | Sequence[Any]) -> str:
    """Canonical identity of a group's values (a ``group_metadata`` mapping or the group ``_id``
    list): compact JSON with sorted keys, so equal groups give equal strings."""
    if isinstance(record_group_values, Mapping):
        return _canonical(dict(record_group_values))
    if isinstance(record_group_values, str | bytes):
        raise QueryError("group values must be a mapping or a list, not a string")
    return _canonical(list(record_group_values))


_SAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")
_MAX_KEY = 200


def _key_part(value: Any) -> tuple[str, bool]:
    """(safe text, altered?) for one value of a partition key."""
    if value is None:
        return "null", False
    if isinstance(value, bool):
        return ("true" if value else "false"), False
    if isinstance(value, datetime):
        text = _to_utc(value).strftime("%Y-%m-%dT%H-%M-%SZ")
        return text, True
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = _canonical(value)
    safe = _SAFE.sub("_", text)
    safe = re.sub(r"\.{2,}", ".", safe)
    altered = safe != text or "+" in text or text in {"null", "true", "false"}
    return safe, altered


def partition_key_for(
    item: str | Mapping[str, Any] | Sequence[Any], *, prefix: str | None = None
) -> str:
    """A Dagster dynamic-partition key for an asset name or a group's values.

    Keys use only ``A-Z a-z 0-9 _ . = + -`` (Dagster forbids ``...`` and control characters;
    ``, [ ] |`` break multi-partition keys; ``/`` and ``:`` break paths and URLs), never start with
    ``-`` or ``.``, and are at most 200 characters. An AIND asset name is already safe and is its
    own key. Group values are joined with ``+`` in order. Whenever text had to be changed (or is
    ambiguous) a short hash of the original is appended (``__`` + 8 hex), so distinct inputs keep
    distinct keys; the same input always gives the same key.
    """
    if isinstance(item, str):
        parts = [_key_part(item)]
        identity = item
    elif isinstance(item, Mapping):
        parts = [_key_part(v) for v in item.values()]
        identity = group_key(item)
    elif isinstance(item, Sequence) and not isinstance(item, bytes):
        parts = [_key_part(v) for v in item]
        identity = group_key(item)
    else:
        raise QueryError(f"cannot make a partition key from {type(item).__name__}")
    if prefix:
        pre, pre_altered = _key_part(prefix)
        parts = [(pre, pre_altered or "+" in prefix), *parts]
        identity = f"{prefix}\x00{identity}"
    key = "+".join(text for text, _ in parts)
    altered = any(a for _, a in parts)
    if not key or key[0] in "-.":
        key = f"k{key}"
        altered = True
    if altered or len(key) > _MAX_KEY:
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:8]
        key = f"{key[: _MAX_KEY - 10]}__{digest}"
    return key
