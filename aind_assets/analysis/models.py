"""Models of the AIND analysis flow (pure pydantic: no Dagster, no servers).

* :class:`AnalysisDispatchModel` — one job's inputs, field for field as analysis-pipeline-utils.
* :class:`AnalysisSpecification` / :class:`AnalysisOutputs` — bases users subclass for an
  analysis' parameters and structured outputs (both allow extra fields, like aind-data-schema's
  ``GenericModel`` they derive from, because merged parameters always carry ``file_location``).
* :class:`DispatchSpec` / :class:`DispatchConfig` / :func:`load_dispatch_config` — which data
  assets to dispatch to which registered analyses; see ``examples/dispatch.yaml``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from aind_data_schema.base import GenericModel
from aind_data_schema.components.identifiers import Code
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator

from aind_assets.analysis import queries

__all__ = [
    "AnalysisDispatchModel",
    "AnalysisOutputs",
    "AnalysisSpec",
    "AnalysisSpecification",
    "DispatchConfig",
    "DispatchConfigError",
    "DispatchSpec",
    "load_dispatch_config",
]


class AnalysisDispatchModel(BaseModel):
    """The inputs of one analysis job (same fields and meaning as analysis-pipeline-utils).

    The lists are parallel: one entry per data asset (several when grouped).
    """

    s3_location: list[str] = Field(..., description="S3 location of each data asset.")
    asset_name: list[str] = Field(..., description="Name of each data asset.")
    docdb_record_id: list[str] = Field(..., description="DocDB record id of each data asset.")
    file_location: list[str] | None = Field(
        None, description="Full S3 paths of the selected files within the data assets."
    )
    distributed_parameters: dict[str, Any] | None = Field(
        None, description="The parameter set distributed to this job by the dispatcher."
    )
    group_metadata: dict[str, Any] | None = Field(
        None, description="For grouped assets, the values of the fields that define the group."
    )
    query: str | None = Field(None, description="JSON of the query that selected the assets.")
    analysis_code: Code | None = Field(
        None, description="The analysis code (with parameters) this job runs."
    )


class AnalysisSpecification(GenericModel):
    """Base of an analysis' parameter model: subclass it and add your parameters.

    Extra fields are allowed, as parameters always include ``file_location`` and may include
    distributed parameters the model does not declare.
    """

    analysis_name: str = Field(..., description="Name of the analysis.")
    analysis_tag: str | None = Field(None, description="Tag to organise results (e.g. a version).")


class AnalysisOutputs(GenericModel):
    """Base of an analysis' structured outputs (stored as the process' ``output_parameters``)."""


class DispatchConfigError(ValueError):
    """A dispatch config file is unreadable or invalid; the message names the file and field."""


_SPEC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AnalysisSpec(BaseModel):
    """One registered analysis to run on what a :class:`DispatchSpec` selects."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Registered analysis name.")
    fixed_parameters: dict[str, Any] = Field(
        default_factory=dict, description="Parameters for every job of this analysis."
    )
    distributed_parameters: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Parameter sets; each job is repeated once per set (empty: once).",
    )
    s3_output_bucket: str | None = Field(
        None,
        description="Where this analysis' results go, as in the seeds' analysis specification: "
        "'bucket/prefix' or 's3://bucket/prefix' (or an absolute local folder); results land "
        "in <it>/<hash>/. Default: AIND_RESULTS_ROOT.",
    )

    def output_root(self) -> str | None:
        """``s3_output_bucket`` as a URL (``s3://`` added to a bare bucket/prefix)."""
        value = (self.s3_output_bucket or "").strip().rstrip("/")
        if not value:
            return None
        return value if value.startswith(("s3://", "/")) else f"s3://{value}"


class DispatchSpec(BaseModel):
    """Which data assets to analyse, how to turn them into jobs, and with which analyses."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Unique name: letters, digits and _ (a Dagster name).")
    query: dict[str, Any] | None = Field(None, description="DocDB query for the data assets.")
    query_file: Path | None = Field(None, description="JSON file holding the DocDB query.")
    asset_ids_csv: Path | None = Field(
        None, description="CSV with an asset_id column of Code Ocean data asset ids."
    )
    file_extension: str = Field("", description="Select files `{location}/**/*{ext}`; '' = none.")
    split_files: bool = Field(True, description="One job per file (True) or per asset/group.")
    group_by: list[str] | None = Field(None, description="Fields grouping assets into one job.")
    filter_latest: bool | str = Field(
        False,
        description="Keep only the newest record per filter_by key (True sorts on 'created'; "
        "a string names the field to sort on).",
    )
    filter_by: list[str] | None = Field(None, description="Fields identifying versions.")
    unwind_list_fields: list[str] | None = Field(None, description="List fields to unwind.")
    drop_null_groups: bool = Field(
        True,
        description="Drop records missing a filter_by/group_by field (analysis-pipeline-utils' "
        "default).",
    )
    analyses: list[AnalysisSpec] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _check(self) -> DispatchSpec:
        if not _SPEC_NAME.match(self.name):
            raise ValueError(
                f"name {self.name!r} must start with a letter or _ and hold only letters, "
                "digits and _"
            )
        given = [
            f for f in ("query", "query_file", "asset_ids_csv") if getattr(self, f) is not None
        ]
        if len(given) != 1:
            what = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of query, query_file, asset_ids_csv (got: {what})")
        if self.filter_latest and not self.filter_by:
            raise ValueError("filter_latest needs filter_by (the fields identifying versions)")
        if isinstance(self.filter_latest, str) and not self.filter_latest.strip():
            raise ValueError("filter_latest must be true/false or a field name")
        seen: set[str] = set()
        for analysis in self.analyses:
            if analysis.name in seen:
                raise ValueError(
                    f"analysis {analysis.name!r} is listed twice; use its "
                    "distributed_parameters for several parameter sets"
                )
            seen.add(analysis.name)
        return self

    def with_base_dir(self, base_dir: str | os.PathLike[str]) -> DispatchSpec:
        """A copy whose relative ``query_file`` / ``asset_ids_csv`` are resolved from base_dir."""
        update: dict[str, Path] = {}
        for field in ("query_file", "asset_ids_csv"):
            value = getattr(self, field)
            if value is not None and not value.is_absolute():
                update[field] = Path(base_dir) / value
        return self.model_copy(update=update) if update else self

    def resolved_query(self) -> dict[str, Any]:
        """The DocDB query: ``query``, or read from ``query_file``, or built from the CSV."""
        if self.query is not None:
            return dict(self.query)
        if self.query_file is not None:
            return queries.parse_query(self.query_file)
        assert self.asset_ids_csv is not None
        return queries.query_from_csv(self.asset_ids_csv)

    def query_json(self) -> str:
        """JSON of the resolved query: the value of :attr:`AnalysisDispatchModel.query`."""
        return json.dumps(self.resolved_query(), default=str)

    def pipeline_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`queries.build_pipeline` and the paging helpers."""
        return {
            "group_by": self.group_by,
            "filter_latest": self.filter_latest,
            "filter_by": self.filter_by,
            "unwind_list_fields": self.unwind_list_fields,
            "drop_null_groups": self.drop_null_groups,
        }

    def pipeline(self) -> list[dict[str, Any]]:
        """The full (non-incremental) dispatch pipeline of this spec."""
        return queries.build_pipeline(self.resolved_query(), **self.pipeline_options())

    def analysis(self, name: str) -> AnalysisSpec:
        for analysis in self.analyses:
            if analysis.name == name:
                return analysis
        raise KeyError(f"dispatch spec {self.name!r} has no analysis {name!r}")


class DispatchConfig(RootModel[list[DispatchSpec]]):
    """A list of :class:`DispatchSpec` with unique names."""

    @model_validator(mode="after")
    def _unique(self) -> DispatchConfig:
        names = [spec.name for spec in self.root]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dispatch spec names must be unique; repeated: {', '.join(dupes)}")
        outputs: dict[str, set[str]] = {}
        for spec in self.root:
            for entry in spec.analyses:
                if entry.output_root():
                    outputs.setdefault(entry.name, set()).add(str(entry.output_root()))
        for name, roots in sorted(outputs.items()):
            if len(roots) > 1:
                raise ValueError(
                    f"analysis {name!r} has several s3_output_bucket values "
                    f"({', '.join(sorted(roots))}); an analysis writes to one place"
                )
        return self

    def __iter__(self) -> Iterator[DispatchSpec]:  # type: ignore[override]
        return iter(self.root)

    def __len__(self) -> int:
        return len(self.root)

    def __getitem__(self, name: str) -> DispatchSpec:
        for spec in self.root:
            if spec.name == name:
                return spec
        raise KeyError(f"no dispatch spec named {name!r}")

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.root]

    def analysis_names(self) -> set[str]:
        """Every analysis name the config refers to."""
        return {a.name for spec in self.root for a in spec.analyses}

    def output_root(self, analysis: str) -> str | None:
        """The ``s3_output_bucket`` of ``analysis`` (one per analysis), or None."""
        for spec in self.root:
            for entry in spec.analyses:
                if entry.name == analysis and entry.output_root():
                    return entry.output_root()
        return None


def _read_document(path: Path) -> Any:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DispatchConfigError(f"{path}: cannot read dispatch config: {exc}") from exc
    if suffix in {".yaml", ".yml"}:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise DispatchConfigError(f"{path}: invalid YAML{where}: {problem}") from exc
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DispatchConfigError(
                f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from exc
    raise DispatchConfigError(
        f"{path}: unknown dispatch config format {suffix!r} (use .yaml, .yml or .json)"
    )


def _describe_errors(path: Path, specs: list[Any], error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        loc = list(err["loc"])
        where = ""
        if loc and isinstance(index := loc[0], int):
            loc.pop(0)
            name = specs[index].get("name") if isinstance(specs[index], dict) else None
            where = f"specs[{index}]" + (f" ({name})" if name else "")
        field = ".".join(str(p) for p in loc)
        location = ".".join(p for p in (where, field) if p) or "config"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {location}: {message}")
    return f"{path}: invalid dispatch config:\n" + "\n".join(lines)


def load_dispatch_config(
    path: str | os.PathLike[str], *, known_analyses: Iterable[str] | None = None
) -> DispatchConfig:
    """Read a dispatch config (YAML by ``.yaml``/``.yml``, JSON by ``.json``).

    The document is a list of specs, or a mapping with a ``specs`` list. Relative ``query_file``
    and ``asset_ids_csv`` paths are resolved from the config file's folder. With
    ``known_analyses``, every analysis name must be one of them. Errors raise
    :class:`DispatchConfigError` naming the file, the spec and the field.
    """
    path = Path(path)
    document = _read_document(path)
    if isinstance(document, dict) and set(document) == {"specs"}:
        document = document["specs"]
    if not isinstance(document, list):
        raise DispatchConfigError(
            f"{path}: a dispatch config is a list of specs (or a mapping with a 'specs' list), "
            f"got {type(document).__name__}"
        )
    try:
        config = DispatchConfig.model_validate(document)
    except ValidationError as exc:
        raise DispatchConfigError(_describe_errors(path, document, exc)) from exc
    config = DispatchConfig([spec.with_base_dir(path.parent) for spec in config])
    if known_analyses is not None:
        known = set(known_analyses)
        for i, spec in enumerate(config):
            for analysis in spec.analyses:
                if analysis.name not in known:
                    raise DispatchConfigError(
                        f"{path}: specs[{i}] ({spec.name}).analyses: unknown analysis "
                        f"{analysis.name!r}; registered: {', '.join(sorted(known)) or 'none'}"
                    )
    return config
