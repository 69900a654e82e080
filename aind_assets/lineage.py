"""Processing records (aind-data-schema ``Processing``) for one materialization.

Pure functions, no Dagster import: the IO manager, the analysis wrapper and the HBCD flow all
build their lineage here, so every record has the same shape and validates under
aind-data-schema. A record's name is ``sha256(Code.model_dump_json())``, the rule
analysis-pipeline-utils uses to recognise work already done.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from aind_data_schema.components.identifiers import Code, DataAsset
from aind_data_schema.core.processing import (
    DataProcess,
    Processing,
    ProcessName,
    ProcessStage,
    ResourceUsage,
)
from aind_data_schema_models.units import MemoryUnit

CODE_URL = os.environ.get(
    "AIND_ASSETS_CODE_URL", "https://github.com/AllenNeuralDynamics/aind-assets"
)
DEFAULT_EXPERIMENTER = "aind-assets"

# Keys an asset may put in its output metadata to enrich the record the IO manager writes.
META_PARAMETERS = "lineage/parameters"
META_INPUTS = "lineage/inputs"
META_PROCESS_TYPE = "lineage/process_type"
META_STAGE = "lineage/stage"
META_STARTED_AT = "lineage/started_at"
META_NOTES = "lineage/notes"


@functools.cache
def package_version() -> str:
    """Installed version of aind-assets (the code that produced a record; read once per
    process: each lookup scans the installed distributions, ~3 ms)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aind-assets")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


@functools.cache
def git_commit() -> str | None:
    """The commit of the running code: ``AIND_ASSETS_GIT_COMMIT`` in images, else ``git``."""
    if commit := os.environ.get("AIND_ASSETS_GIT_COMMIT"):
        return commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def build_code(
    *,
    name: str,
    version: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    input_data: Iterable[str] = (),
    url: str = CODE_URL,
    run_script: str | None = None,
    commit: str | None = None,
) -> Code:
    """The ``Code`` of one step: what ran, on which inputs, with which parameters.

    Inputs are sorted so that the same set of inputs always hashes the same way. Nothing that
    varies between machines (interpreter patch version, host) goes in here, since the hash of
    this model decides whether work was already done.
    """
    return Code(
        url=url,
        name=name,
        version=version or package_version(),
        commit_hash=commit,
        run_script=Path(run_script) if run_script else None,
        language="Python",
        input_data=[DataAsset(url=u) for u in sorted(set(input_data))] or None,
        parameters=dict(parameters) if parameters else None,
    )


def record_name(code: Code) -> str:
    """The de-duplication key: sha256 of the ``Code`` JSON (analysis-pipeline-utils' rule)."""
    return hashlib.sha256(code.model_dump_json().encode()).hexdigest()


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (one step per process under the default executor)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@functools.cache
def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def resource_usage(peak_ram_bytes: int | None = None) -> ResourceUsage:
    """Where a step ran and how much memory it took at its peak."""
    peak = peak_rss_bytes() if peak_ram_bytes is None else peak_ram_bytes
    return ResourceUsage(
        os=f"{platform.system()} {platform.release()}",
        architecture=platform.machine(),
        cpu=_cpu_name(),
        cpu_cores=os.cpu_count(),
        system_memory=round(psutil.virtual_memory().total / 2**30, 2),
        system_memory_unit=MemoryUnit.GB,
        ram=round(peak / 2**20, 2),
        ram_unit=MemoryUnit.MB,
    )


def build_processing(
    *,
    code: Code,
    start: datetime,
    end: datetime | None = None,
    output_location: str | None = None,
    output_path: str | None = None,
    process_type: ProcessName | str = ProcessName.OTHER,
    stage: ProcessStage | str = ProcessStage.PROCESSING,
    name: str | None = None,
    output_parameters: Mapping[str, Any] | None = None,
    notes: str | None = None,
    peak_ram_bytes: int | None = None,
    experimenters: Iterable[str] = (DEFAULT_EXPERIMENTER,),
) -> Processing:
    """One ``Processing`` holding one ``DataProcess`` for one materialization.

    ``output_location`` is the full URL of the output (kept in ``output_parameters``, since
    aind-data-schema's ``AssetPath`` is a local path type that would fold ``s3://`` to ``s3:/``);
    ``output_path`` is the path relative to the asset root.
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    end = end or datetime.now(UTC)
    process = DataProcess(
        process_type=ProcessName(process_type),
        stage=ProcessStage(stage),
        name=name or code.name or str(process_type),
        code=code,
        experimenters=list(experimenters),
        start_date_time=start,
        end_date_time=end,
        output_path=output_path,
        output_parameters={
            **({"output_location": output_location} if output_location else {}),
            **(output_parameters or {}),
        }
        or None,
        notes=notes,
        resources=resource_usage(peak_ram_bytes),
    )
    # As analysis-pipeline-utils: a sequential process graph ({name: []} for one process).
    return Processing.create_with_sequential_process_graph(data_processes=[process])


def record_document(processing: Processing, name: str, **extra: Any) -> dict[str, Any]:
    """The DocDB document for a record: ``_id = name = hash`` plus the processing JSON."""
    body = processing.model_dump(mode="json")
    return {"_id": name, "name": name, "processing": body, **extra}
