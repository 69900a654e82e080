"""Checks of a dispatch config against the registered analyses (pure: no Dagster).

:func:`validate_dispatch_config` runs when the code location loads (and when a resource loads the
config), so a broken config fails there, naming the file, the spec and the field, instead of a
run failing later: queries (read from ``query_file`` / ``asset_ids_csv`` too) with unknown
operators, ``file_extension`` values that cannot be a file-name ending, fixed and distributed
parameters whose types the analysis' parameter model rejects.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from aind_assets.analysis.inputs import AssetIdsWarning, parameter_problems, query_problems
from aind_assets.analysis.models import DispatchConfig, DispatchConfigError, DispatchSpec
from aind_assets.analysis.queries import QueryError

if TYPE_CHECKING:
    from aind_assets.analysis.registry import AnalysisRegistry

__all__ = ["RESERVED", "spec_problems", "validate_dispatch_config"]

#: Analysis names a spec cannot run: they name the spec's own assets (analysis/<spec>/<name>).
RESERVED = frozenset({"dispatch", "data_assets"})

_BAD_EXTENSION_CHARS = set("/\\*?[]{}") | {" ", "\t", "\n"}


def spec_problems(spec: DispatchSpec, registry: AnalysisRegistry) -> list[str]:
    """What is wrong with one spec (``field: message`` lines; ``[]`` when nothing)."""
    problems: list[str] = []
    source = (
        f"query_file {spec.query_file}"
        if spec.query_file is not None
        else f"asset_ids_csv {spec.asset_ids_csv}"
        if spec.asset_ids_csv is not None
        else "query"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AssetIdsWarning)  # warned when the query is used
            query = spec.resolved_query()
    except QueryError as exc:
        problems.append(f"{source}: {exc}")
    else:
        problems.extend(f"{source}: {p}" for p in query_problems(query))
    ext = spec.file_extension
    if ext and (set(ext) & _BAD_EXTENSION_CHARS or ext != ext.strip()):
        problems.append(
            f"file_extension {ext!r}: a file-name ending such as '.nwb' (no path separator, "
            "wildcard or space; the pattern is {location}/**/*{file_extension})"
        )
    for i, analysis in enumerate(spec.analyses):
        if analysis.name in RESERVED:
            problems.append(
                f"analyses[{i}] ({analysis.name}): the name is taken by the spec's own asset "
                f"analysis/{spec.name}/{analysis.name}"
            )
        if analysis.name not in registry:
            continue  # reported by load_dispatch_config(known_analyses=...)
        definition = registry.get(analysis.name)
        base = definition.code_defaults()
        for problem in parameter_problems(definition.spec, analysis.fixed_parameters, base):
            problems.append(f"analyses[{i}] ({analysis.name}).fixed_parameters.{problem}")
        merged = {**base, **analysis.fixed_parameters}
        for j, params in enumerate(analysis.distributed_parameters):
            for problem in parameter_problems(definition.spec, params, merged):
                problems.append(
                    f"analyses[{i}] ({analysis.name}).distributed_parameters[{j}].{problem}"
                )
    return problems


def validate_dispatch_config(
    config: DispatchConfig, registry: AnalysisRegistry, path: str | os.PathLike[str]
) -> DispatchConfig:
    """``config`` unchanged, or :class:`DispatchConfigError` listing every problem of every
    spec, each as ``<file>: specs[i] (<name>).<field>: <what is wrong>``."""
    lines = [
        f"  specs[{i}] ({spec.name}).{problem}"
        for i, spec in enumerate(config)
        for problem in spec_problems(spec, registry)
    ]
    if lines:
        raise DispatchConfigError(f"{Path(path)}: invalid dispatch config:\n" + "\n".join(lines))
    return config
