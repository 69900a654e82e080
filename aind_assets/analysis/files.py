"""From dispatch rows to analysis tasks (pure: the caller passes the listing function).

Rows come from the aggregation pipeline of :mod:`aind_assets.analysis.queries`. For each row:

* files are selected with the semantics of ``glob("{location}/**/*{ext}")``, as ``s3://`` URLs
  (:func:`select_files`);
* an asset without a matching file is skipped, and reported so the caller can warn;
* ``split_files=True`` gives one model per file (a row holding several assets is an error),
  ``False`` one model with all files (:func:`build_dispatch_models`);
* each model is repeated once per distributed parameter set (:func:`expand_tasks`);
* a job's parameters merge as analysis-pipeline-utils merges them, by dict update in two
  stages: dispatch (analysis code < fixed + ``file_location`` < distributed,
  :func:`dispatch_parameters`) then job (dispatched < run config + ``file_location`` <
  distributed, :func:`job_parameters`); ``dry_run`` is never kept.

As in analysis-pipeline-utils, members of a grouped row keep the order of the pipeline's ``$push``
(the job's ``input_data``, and so its hash, follows it) and the files of each asset are sorted
(fsspec's glob order). Beyond the package, ``query``/``group_metadata`` are kept on unsplit models
(analysis-pipeline-utils rebuilt those models without them).
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from aind_assets.analysis.models import AnalysisDispatchModel, AnalysisSpec

__all__ = [
    "DispatchModels",
    "build_dispatch_models",
    "dispatch_parameters",
    "expand_tasks",
    "job_parameters",
    "select_files",
]

logger = logging.getLogger(__name__)

#: ``list_fn(location)`` → every file path below ``location`` (recursively), with or without a
#: scheme: e.g. ``s3fs.S3FileSystem().find`` or ``fsspec.filesystem("file").find``.
ListFn = Callable[[str], Iterable[str]]


def _split_scheme(path: str) -> tuple[str, str]:
    if "://" in path:
        scheme, rest = path.split("://", 1)
        return scheme, rest
    return "", path


def _matching(location: str, ext: str, paths: Iterable[str]) -> list[str]:
    scheme, base = _split_scheme(location)
    base = base.rstrip("/")
    pattern = f"*{ext}"
    found: set[str] = set()
    for path in paths:
        _, rest = _split_scheme(str(path))
        if not rest.startswith(base + "/"):
            continue  # another prefix, e.g. ".../asset_2" when listing ".../asset"
        relative = rest[len(base) + 1 :]
        if not relative or relative.endswith("/"):
            continue
        parts = relative.split("/")
        # Folders count too (glob lists them): a Zarr store is a folder named like a file
        # (``x.nwb/``), and NWB published as Zarr is selected by its folder.
        hits = [
            "/".join(parts[: i + 1])
            for i, part in enumerate(parts)
            if fnmatch.fnmatchcase(part, pattern)
        ]
        for hit in hits:
            path = f"{base}/{hit}"
            if scheme:
                found.add(f"{scheme}://{path}")
            elif location.startswith("/"):
                found.add(path)  # a local directory (the embedded store): plain paths
            else:
                found.add(f"s3://{path}")
    return sorted(found)


def select_files(locations: Iterable[str], ext: str, list_fn: ListFn) -> dict[str, list[str]]:
    """Files under each location matching ``{location}/**/*{ext}``, as sorted URLs.

    ``**`` is any depth (including none) and ``*`` any name prefix, so ``ext`` is matched
    against the end of each file or folder name (a folder such as a Zarr ``x.nwb/`` is selected,
    as fsspec's glob selects it) (``".nwb"``; ``"nwb"`` would also match ``"x_nwb"``, as with
    the original glob). Results keep the location's scheme, ``s3://`` when it has none, except
    that an absolute local path (``/data/...``, the embedded store) gives plain local paths.
    Every location is a key; locations without a match map to ``[]``.
    """
    out: dict[str, list[str]] = {}
    for location in locations:
        if location in out:
            continue
        out[location] = _matching(location, ext, list_fn(location))
    return out


class DispatchModels(NamedTuple):
    """Result of :func:`build_dispatch_models`: the models and the asset names skipped for
    having no matching file (the caller warns about them)."""

    models: list[AnalysisDispatchModel]
    skipped: list[str]


def _as_row(record: Mapping[str, Any] | AnalysisDispatchModel) -> dict[str, Any]:
    if isinstance(record, AnalysisDispatchModel):
        return record.model_dump()
    return dict(record)


def _ordered_members(row: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    locations = list(row["s3_location"])
    names = list(row["asset_name"])
    ids = [str(i) for i in row["docdb_record_id"]]
    if not len(locations) == len(names) == len(ids):
        raise ValueError(
            "s3_location, asset_name and docdb_record_id must have the same length, got "
            f"{len(locations)}, {len(names)}, {len(ids)} (assets {names})"
        )
    return list(zip(locations, names, ids, strict=True))


def build_dispatch_models(
    records: Iterable[Mapping[str, Any] | AnalysisDispatchModel],
    files_by_location: Mapping[str, Sequence[str]] | None,
    *,
    split_files: bool = True,
    query: Mapping[str, Any] | str | None = None,
) -> DispatchModels:
    """Dispatch models for aggregation rows (or models).

    ``files_by_location`` (from :func:`select_files`) is ``None`` when no file extension was asked
    for: then each row becomes one model without ``file_location``. Otherwise assets without files
    are dropped (and listed in ``skipped``), a row left without assets gives no model,
    ``split_files=True`` gives one model per file (``ValueError`` if the row has several assets)
    and ``False`` one model with all files of the row. ``query`` (dict or JSON) fills the models'
    ``query`` unless the row has one; ``group_metadata`` comes from the row.
    """
    query_text = json.dumps(query, default=str) if isinstance(query, Mapping) else query
    models: list[AnalysisDispatchModel] = []
    skipped: list[str] = []
    for record in records:
        row = _as_row(record)
        members = _ordered_members(row)
        base = {
            "group_metadata": row.get("group_metadata"),
            "query": row.get("query") or query_text,
            "distributed_parameters": row.get("distributed_parameters"),
            "analysis_code": row.get("analysis_code"),
        }
        if files_by_location is None:
            models.append(
                AnalysisDispatchModel(
                    s3_location=[m[0] for m in members],
                    asset_name=[m[1] for m in members],
                    docdb_record_id=[m[2] for m in members],
                    file_location=row.get("file_location"),
                    **base,
                )
            )
            continue
        if split_files and len(members) > 1:
            raise ValueError(
                "split_files is not supported for grouped data assets: the row "
                f"{row.get('group_metadata') or [m[1] for m in members]} holds {len(members)} "
                "assets; set split_files: false for grouped specs"
            )
        kept: list[tuple[str, str, str]] = []
        files: list[str] = []
        for location, name, record_id in members:
            found = list(files_by_location.get(location) or [])
            if not found:
                skipped.append(name)
                logger.warning("No matching file in %s (%s): skipping it", location, name)
                continue
            kept.append((location, name, record_id))
            files.extend(found)
        if not kept:
            continue
        common = {
            "s3_location": [m[0] for m in kept],
            "asset_name": [m[1] for m in kept],
            "docdb_record_id": [m[2] for m in kept],
            **base,
        }
        if split_files:
            models.extend(AnalysisDispatchModel(**common, file_location=[f]) for f in files)
        else:
            models.append(AnalysisDispatchModel(**common, file_location=files))
    return DispatchModels(models, skipped)


def expand_tasks(
    models: Iterable[AnalysisDispatchModel],
    analysis_spec: AnalysisSpec | Sequence[Mapping[str, Any]] | None,
) -> list[AnalysisDispatchModel]:
    """Records × files (already in ``models``) × parameter sets.

    Each model is copied once per distributed parameter set of ``analysis_spec`` (an
    :class:`AnalysisSpec` or the list of sets itself), with ``distributed_parameters`` set; with no
    sets the models are returned unchanged.
    """
    if isinstance(analysis_spec, AnalysisSpec):
        parameter_sets = list(analysis_spec.distributed_parameters)
    else:
        parameter_sets = [dict(p) for p in (analysis_spec or [])]
    tasks: list[AnalysisDispatchModel] = []
    for model in models:
        if not parameter_sets:
            tasks.append(model)
            continue
        for params in parameter_sets:
            tasks.append(model.model_copy(update={"distributed_parameters": dict(params)}))
    return tasks


def _layer(values: Mapping[str, Any] | None, file_location: Sequence[str] | None) -> dict[str, Any]:
    """One parameter layer as analysis-pipeline-utils' ``update_analysis_process`` takes it:
    ``dry_run`` removed, ``file_location`` set (in place if present, else last)."""
    params = {k: v for k, v in (values or {}).items() if k != "dry_run"}
    if file_location:
        params["file_location"] = list(file_location)
    return params


def dispatch_parameters(
    analysis_code_defaults: Mapping[str, Any] | None,
    fixed: Mapping[str, Any] | None,
    file_location: Sequence[str] | None,
    distributed: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The parameters of a dispatched job's ``analysis_code`` (the package's dispatcher stage):
    analysis code < fixed (+ ``file_location``) < distributed, by dict update, so keys keep the
    order in which they first appear. Nothing is validated, defaulted or sorted: the order and
    values are what the package hashes."""
    merged = {k: v for k, v in (analysis_code_defaults or {}).items() if k != "dry_run"}
    merged.update(_layer(fixed, file_location))
    merged.update({k: v for k, v in (distributed or {}).items() if k != "dry_run"})
    return merged


def job_parameters(
    dispatched: Mapping[str, Any] | None,
    run_config: Mapping[str, Any] | None,
    file_location: Sequence[str] | None,
    distributed: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The parameters of a job's ``Code`` (the package's wrapper stage): the dispatched
    ``analysis_code`` parameters < run config (+ ``file_location``) < distributed, by dict
    update (see :func:`dispatch_parameters`)."""
    merged = {k: v for k, v in (dispatched or {}).items() if k != "dry_run"}
    merged.update(_layer(run_config, file_location))
    merged.update({k: v for k, v in (distributed or {}).items() if k != "dry_run"})
    return merged
