"""Query analysis results (pure: no Dagster). Used by ``aind-assets results``.

Records are the documents :func:`aind_assets.analysis.wrapper.run_job` writes to the results
collection: an aind-data-schema ``Metadata`` (``name`` = ``_id`` = sha256 of the job's ``Code``,
``location`` = the results folder, ``processing.data_processes[0].code`` = what ran on what)
plus ``created`` and the Dagster context. Filters follow analysis-pipeline-utils'
``get_docdb_records_partial``: analysis name, code url and version, parameters, input data,
``latest_only``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aind_assets.resources.docdb import DocDBResource

__all__ = ["CODE", "build_filter", "format_table", "parse_parameter", "query_results"]

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
    parameters: Mapping[str, Any] | None = None,
    input_asset: str | None = None,
) -> dict[str, Any]:
    """The DocDB filter for :func:`query_results`.

    ``analysis_name`` matches the code name or the ``analysis_name`` parameter; ``parameters``
    match one by one (a record may have more); ``input_asset`` is a data asset's location
    (``s3://…``, or an absolute path) or its name (the last part of its location).
    """
    clauses: list[dict[str, Any]] = []
    if analysis_name:
        clauses.append(
            {
                "$or": [
                    {f"{CODE}.name": analysis_name},
                    {f"{CODE}.parameters.analysis_name": analysis_name},
                ]
            }
        )
    if code_url:
        clauses.append({f"{CODE}.url": code_url})
    if code_version:
        clauses.append({f"{CODE}.version": code_version})
    for name, value in (parameters or {}).items():
        clauses.append({f"{CODE}.parameters.{name}": value})
    if input_asset:
        if "://" in input_asset or input_asset.startswith("/"):
            clauses.append({f"{CODE}.input_data.url": input_asset.rstrip("/")})
        else:
            clauses.append({"input_asset_names": input_asset})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _created(record: Mapping[str, Any]) -> str:
    value = record.get("created")
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


def _identity(record: Mapping[str, Any]) -> str:
    """What "the same analysis of the same inputs with the same parameters" means for
    ``latest_only``: code name, input data and parameters (not the version)."""
    code = _code(record)
    params = dict(code.get("parameters") or {})
    return json.dumps(
        [code.get("name"), code.get("input_data"), params], sort_keys=True, default=str
    )


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
    parameters: Mapping[str, Any] | None = None,
    input_asset: str | None = None,
    latest_only: bool = False,
    limit: int = 0,
) -> list[dict[str, Any]]:
    """Result records, newest first.

    ``latest_only`` keeps, for each analysis × input data × parameters, the newest record (so a
    new version of an analysis hides the older version's results of the same job).
    """
    query = build_filter(
        analysis_name=analysis_name,
        code_url=code_url,
        code_version=code_version,
        parameters=parameters,
        input_asset=input_asset,
    )
    records = list(docdb.find(collection, query))
    records.sort(key=lambda r: (_created(r), r.get("_id", "")), reverse=True)
    if latest_only:
        seen: set[str] = set()
        kept = []
        for record in records:
            identity = _identity(record)
            if identity not in seen:
                seen.add(identity)
                kept.append(record)
        records = kept
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
