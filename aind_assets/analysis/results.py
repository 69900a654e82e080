"""Query analysis results (pure: no Dagster). Used by ``aind-assets results``.

Records are the documents :func:`aind_assets.analysis.wrapper.run_job` writes to the results
collection: an aind-data-schema ``Metadata`` (``name`` = ``_id`` = sha256 of the job's ``Code``,
``location`` = the results folder, ``processing.data_processes[0].code`` = what ran on what)
plus ``created`` and the Dagster context. Filters and ``latest_only`` are analysis-pipeline-utils'
``get_docdb_records_partial`` (code url and version, input data locations, parameters), plus
analysis name, single parameter values and input asset names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aind_data_schema.components.identifiers import DataAsset

if TYPE_CHECKING:
    from aind_assets.resources.docdb import DocDBResource

__all__ = [
    "CODE",
    "build_filter",
    "format_table",
    "latest_pipeline",
    "parse_parameter",
    "query_results",
]

#: Where a record keeps the job's Code.
CODE = "processing.data_processes.0.code"


def parse_parameter(text: str) -> tuple[str, Any]:
    """``name=value`` → ``(name, value)``; the value is JSON when it parses (``2.0``, ``true``,
    ``[1]``), else the text."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"parameter filter {text!r} must look like name=value")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name.strip(), value


def build_filter(
    *,
    analysis_name: str | None = None,
    code_url: str | None = None,
    code_version: str | None = None,
    input_data_locations: Sequence[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    parameter_values: Mapping[str, Any] | None = None,
    input_asset: str | None = None,
) -> dict[str, Any]:
    """The DocDB filter for :func:`query_results`.

    ``code_url``, ``code_version``, ``input_data_locations`` (``$all`` of their ``DataAsset`` documents)
    and ``parameters`` (the whole parameters document, equal field for field and in order) give
    exactly analysis-pipeline-utils' ``get_docdb_records_partial`` filter. Beyond it:
    ``analysis_name`` matches the code name or the ``analysis_name`` parameter;
    ``parameter_values`` match one by one (a record may have more); ``input_asset`` is a data
    asset's location (``s3://…``, or an absolute path) or its name (the last part of its location).
    """
    package: dict[str, Any] = {}
    if code_url:
        package[f"{CODE}.url"] = code_url
    if code_version:
        package[f"{CODE}.version"] = code_version
    if input_data_locations:
        package[f"{CODE}.input_data"] = {
            "$all": [DataAsset(url=u).model_dump(mode="json") for u in input_data_locations]
        }
    if parameters:
        package[f"{CODE}.parameters"] = dict(parameters)
    clauses: list[dict[str, Any]] = [package] if package else []
    if analysis_name:
        clauses.append(
            {
                "$or": [
                    {f"{CODE}.name": analysis_name},
                    {f"{CODE}.parameters.analysis_name": analysis_name},
                ]
            }
        )
    for name, value in (parameter_values or {}).items():
        clauses.append({f"{CODE}.parameters.{name}": value})
    if input_asset:
        if "://" in input_asset or input_asset.startswith("/"):
            clauses.append({f"{CODE}.input_data.url": input_asset.rstrip("/")})
        else:
            clauses.append({"input_asset_names": input_asset})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def latest_pipeline(filter_query: Mapping[str, Any]) -> list[dict[str, Any]]:
    """analysis-pipeline-utils' ``latest_only`` aggregation, stage for stage: newest ``created``
    first, then one record per ``$processing.data_processes.0.code`` group.

    Kept exactly as the package has it, so both systems return the same records on the same
    server. What the group key yields depends on the server: one that reads ``.0`` as an array
    index (mongoeco, the test server) groups by the whole Code, and since a record's ``_id`` is
    the hash of its Code every matching record is kept; MongoDB does not index arrays with a
    numeric path part in aggregation expressions, so there all records share one key and only
    the newest is kept."""
    return [
        {"$match": dict(filter_query)},
        {"$sort": {"created": -1}},
        {"$group": {"_id": f"${CODE}", "latest_record": {"$first": "$$ROOT"}}},
        {"$replaceRoot": {"newRoot": "$latest_record"}},
    ]


def _created(record: Mapping[str, Any]) -> str:
    value = record.get("created")
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


def _code(record: Mapping[str, Any]) -> dict[str, Any]:
    processes = (record.get("processing") or {}).get("data_processes") or [{}]
    return dict(processes[0].get("code") or {})


def query_results(
    docdb: DocDBResource,
    collection: str,
    *,
    analysis_name: str | None = None,
    code_url: str | None = None,
    code_version: str | None = None,
    input_data_locations: Sequence[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    parameter_values: Mapping[str, Any] | None = None,
    input_asset: str | None = None,
    latest_only: bool = False,
    limit: int = 0,
) -> list[dict[str, Any]]:
    """Result records, newest first (filters: :func:`build_filter`).

    ``latest_only`` runs analysis-pipeline-utils' aggregation (:func:`latest_pipeline`) on the
    filtered records, so both systems keep the same records.
    """
    query = build_filter(
        analysis_name=analysis_name,
        code_url=code_url,
        code_version=code_version,
        input_data_locations=input_data_locations,
        parameters=parameters,
        parameter_values=parameter_values,
        input_asset=input_asset,
    )
    if latest_only:
        records = list(docdb.aggregate(collection, latest_pipeline(query)))
    else:
        records = list(docdb.find(collection, query))
    records.sort(key=lambda r: (_created(r), r.get("_id", "")), reverse=True)
    return records[:limit] if limit else records


def summarize(record: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of the results table for one record."""
    code = _code(record)
    params = dict(code.get("parameters") or {})
    params.pop("analysis_name", None)
    files = params.pop("file_location", None)
    inputs = [d.get("url", "") for d in code.get("input_data") or []]
    return {
        "created": _created(record)[:19],
        "analysis": code.get("name"),
        "version": code.get("version"),
        "inputs": ", ".join(i.rstrip("/").rsplit("/", 1)[-1] for i in inputs),
        "files": len(files) if isinstance(files, list) else 0,
        "parameters": json.dumps(params, sort_keys=True, default=str),
        "record": record.get("name") or record.get("_id"),
        "location": record.get("location"),
    }


def format_table(records: Sequence[Mapping[str, Any]], *, max_width: int = 60) -> str:
    """A plain-text table of records (one line each)."""
    rows = [summarize(r) for r in records]
    if not rows:
        return "no results"
    columns = list(rows[0])

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    widths = {c: max(len(c), *(len(cell(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        lines.append("  ".join(cell(row[c]).ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)
