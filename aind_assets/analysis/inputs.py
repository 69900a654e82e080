"""Checks of what users and DocDB hand the analysis flow (pure: no Dagster, no I/O).

* the CSV of asset ids (:func:`parse_asset_ids_csv`): encoding, quoting, blank and duplicate ids;
* DocDB queries (:func:`query_problems`): operators MongoDB does not know;
* fixed and distributed parameters (:func:`parameter_problems`): types checked against the
  analysis' parameter model when the code location loads, not when a run starts;
* DocDB records and dispatch rows (:func:`row_problems`): a record without ``name`` or with a
  ``location`` that is missing or not a string cannot become a partition;
* locations (:func:`location_problem`).

Each returns (or raises with) a message naming the input and what is wrong with it.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = [
    "AssetIdsWarning",
    "QUERY_OPERATORS",
    "location_problem",
    "parameter_problems",
    "parse_asset_ids_csv",
    "query_problems",
    "row_problems",
]


class AssetIdsWarning(UserWarning):
    """A CSV of asset ids has blank or repeated ids (skipped, as analysis-pipeline-utils does)."""


# --------------------------------------------------------------------------------------------
# CSV of asset ids
# --------------------------------------------------------------------------------------------

#: What an asset id may hold (Code Ocean ids are UUIDs; names of letters, digits, ``-_.:``).
_ASSET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


def _lines(numbers: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def parse_asset_ids_csv(text: str, source: str) -> list[str]:
    """The ``asset_id`` column of a CSV: stripped, blanks skipped, duplicates dropped (first
    kept), each with an :class:`AssetIdsWarning` naming the lines. Raises ``ValueError`` naming
    ``source`` and the line for: no ``asset_id`` column, an unterminated quote, a row with more
    cells than the header, an id that is not an id (spaces, quotes, line breaks), no id at all."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ValueError(f"{source}: line 1: malformed CSV header: {exc}") from None
    columns = [c.strip() for c in header or []]
    if "asset_id" not in columns:
        found = ", ".join(repr(c) for c in columns) if columns else "none (empty file)"
        raise ValueError(f"{source} has no 'asset_id' column; columns found: {found}")
    index = columns.index("asset_id")
    ids: list[str] = []
    first_line: dict[str, int] = {}
    blank: list[int] = []
    repeated: list[int] = []
    line = reader.line_num
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ValueError(
                f"{source}: line {start}: malformed CSV ({exc}); an unterminated quote makes "
                "the rest of the file one value"
            ) from None
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue  # an empty line
        if len(cells) > len(columns):
            raise ValueError(
                f"{source}: line {line}: {len(cells)} cells but the header has {len(columns)} "
                "columns (an unquoted comma?)"
            )
        value = cells[index].strip() if index < len(cells) else ""
        if not value:
            blank.append(line)
            continue
        if not _ASSET_ID.match(value):
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise ValueError(
                f"{source}: line {start}: {shown!r} is not an asset id (letters, digits and "
                "- _ . : only; a stray quote or a line break inside quotes?)"
            )
        if value in first_line:
            repeated.append(line)
            continue
        first_line[value] = line
        ids.append(value)
    if blank:
        warnings.warn(
            AssetIdsWarning(
                f"{source}: {len(blank)} row(s) with a blank asset_id skipped (line(s) "
                f"{_lines(blank)})"
            ),
            stacklevel=2,
        )
    if repeated:
        warnings.warn(
            AssetIdsWarning(
                f"{source}: {len(repeated)} repeated asset_id(s) skipped (line(s) "
                f"{_lines(repeated)})"
            ),
            stacklevel=2,
        )
    if not ids:
        raise ValueError(f"{source}: the 'asset_id' column has no values")
    return ids


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------

#: MongoDB/DocumentDB query operators (``$match`` / ``find``), in field and top-level position.
QUERY_OPERATORS = frozenset(
    {
        # comparison
        "$eq", "$gt", "$gte", "$in", "$lt", "$lte", "$ne", "$nin",
        # logical
        "$and", "$not", "$nor", "$or",
        # element, evaluation
        "$exists", "$type", "$expr", "$jsonSchema", "$mod", "$regex", "$options", "$text",
        "$search", "$language", "$caseSensitive", "$diacriticSensitive", "$where",
        # arrays
        "$all", "$elemMatch", "$size",
        # bitwise, geospatial
        "$bitsAllClear", "$bitsAllSet", "$bitsAnyClear", "$bitsAnySet",
        "$geoIntersects", "$geoWithin", "$near", "$nearSphere", "$box", "$center",
        "$centerSphere", "$geometry", "$maxDistance", "$minDistance", "$polygon",
        # misc
        "$comment", "$rand", "$natural",
    }
)  # fmt: skip


def query_problems(query: Any, path: str = "query") -> list[str]:
    """Where ``query`` uses an operator MongoDB does not know (``$regexp``, ``$equals``...), or
    a field name that is not a string; ``[]`` when none. ``$expr`` bodies (aggregation
    expressions, another language) are not checked."""
    problems: list[str] = []
    if isinstance(query, Mapping):
        for key, value in query.items():
            where = f"{path}.{key}"
            if not isinstance(key, str):
                problems.append(f"{where}: a field name must be a string, got {key!r}")
                continue
            if key.startswith("$"):
                if key not in QUERY_OPERATORS:
                    problems.append(
                        f"{where}: unknown query operator {key!r} (e.g. $eq, $in, $regex, "
                        "$exists, $and, $or, $elemMatch)"
                    )
                    continue
                if key in ("$expr", "$where", "$jsonSchema"):
                    continue
                if key in ("$and", "$or", "$nor") and not (
                    isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)
                ):
                    problems.append(f"{where}: {key} takes a non-empty list of queries")
                    continue
            problems.extend(query_problems(value, where))
    elif isinstance(query, list):
        for i, item in enumerate(query):
            problems.extend(query_problems(item, f"{path}[{i}]"))
    return problems


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def parameter_problems(
    model: type[BaseModel], layer: Mapping[str, Any], base: Mapping[str, Any]
) -> list[str]:
    """The fields of ``layer`` (fixed or one distributed parameter set) whose values the
    parameter model rejects, validated on top of ``base`` (the analysis defaults); fields the
    layer does not give (e.g. required ones given at run time) are not reported."""
    merged = {**dict(base), **dict(layer)}
    try:
        model.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            if not loc or loc[0] not in layer:
                continue
            problems.append(f"{'.'.join(loc)}: {err['msg']} (got {err.get('input')!r})")
        return problems
    return []


# --------------------------------------------------------------------------------------------
# Records, rows and locations
# --------------------------------------------------------------------------------------------

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def location_problem(location: Any) -> str | None:
    """What is wrong with a record's ``location``, or ``None``: it must be a non-empty string,
    ``s3://bucket/prefix``, ``bucket/prefix`` (read as S3) or an absolute local path."""
    if location is None:
        return "has no location"
    if not isinstance(location, str):
        return f"location {location!r} is a {type(location).__name__}, not a string"
    if not location.strip():
        return "location is empty"
    m = _SCHEME.match(location)
    if m and m.group(1).lower() != "s3":
        return f"location {location!r} has the unsupported scheme {m.group(1)!r} (use s3://)"
    if m and not location[len("s3://") :].split("/", 1)[0]:
        return f"location {location!r} names no bucket"
    return None


def _record_label(ids: Sequence[Any], names: Sequence[Any], i: int) -> str:
    rid = ids[i] if i < len(ids) else "?"
    name = names[i] if i < len(names) else None
    return f"DocDB record {str(rid)!r}" + (f" ({name})" if isinstance(name, str) and name else "")


def row_problems(row: Mapping[str, Any]) -> list[str]:
    """Why a dispatch row (one record, or a group's records) cannot be dispatched: each record
    needs a non-empty string ``name`` (it becomes the partition key) and a usable ``location``
    (see :func:`location_problem`). Messages name the record by ``_id`` (and name)."""
    ids = list(row.get("docdb_record_id") or [])
    names = list(row.get("asset_name") or [])
    locations = list(row.get("s3_location") or [])
    if not ids:
        return ["a dispatch row without docdb_record_id"]
    problems = []
    for i in range(len(ids)):
        label = _record_label(ids, names, i)
        name = names[i] if i < len(names) else None
        if not isinstance(name, str) or not name.strip():
            problems.append(
                f"{label} has no name"
                if name is None
                else f"{label}: name {name!r} is not a non-empty string"
            )
        if (reason := location_problem(locations[i] if i < len(locations) else None)) is not None:
            problems.append(
                f"{label} {reason}" if reason.startswith("has") else f"{label}: {reason}"
            )
    return problems


def split_rows(
    rows: Iterable[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """``(usable rows, problems)``: rows with a problem (see :func:`row_problems`) are left out
    whole (a group with one bad record is not dispatched partially)."""
    good: list[Mapping[str, Any]] = []
    problems: list[str] = []
    for row in rows:
        found = row_problems(row)
        if found:
            problems.extend(found)
        else:
            good.append(row)
    return good, problems
