"""Settings of the AIND analysis flow, read from the environment (pure: no Dagster).

The platform-wide settings (DocDB, object store, collections, roots) live in
:mod:`aind_assets.settings`; these are the analysis flow's own knobs.

| variable | meaning | default |
| --- | --- | --- |
| ``AIND_ANALYSIS_DISPATCH_CONFIG`` | dispatch config file; ``.yaml``/``.yml`` is read as YAML, ``.json`` as JSON | the packaged ``examples/dispatch.yaml`` |
| ``AIND_ANALYSIS_MODULES`` | extra Python modules (comma separated) imported to register analyses | none |
| ``AIND_ANALYSIS_PARTITIONS_COLLECTION`` | DocDB collection mapping partition keys to DocDB records | ``dispatch_partitions`` |
| ``AIND_ANALYSIS_PAGE_SIZE`` | records per discovery page | ``1000`` |
| ``AIND_ANALYSIS_TICK_BUDGET_S`` | a sensor tick stops paging after this many seconds (Dagster's limit is 60) | ``40`` |
| ``AIND_ANALYSIS_SENSOR_INTERVAL_S`` | minimum seconds between discovery ticks | ``60`` |
| ``AIND_ANALYSIS_SENSOR_RUNNING`` | ``1``: discovery sensors start running; otherwise they start stopped (turn them on in the UI) | ``0`` |
| ``AIND_ANALYSIS_REQUEST_RUNS`` | ``0``: sensors only register partitions (backfill them deliberately) | ``1`` |
| ``AIND_ANALYSIS_REMOVE_GONE`` | ``1``: sensors delete partitions whose assets left the spec's results | ``0`` |
| ``AIND_ANALYSIS_SWEEP_BATCH`` | partition-map chunks (up to 1000 partitions each) checked per tick for removal | ``1`` |
| ``AIND_ANALYSIS_CLAIM_TIMEOUT_S`` | after this long an unfinished job's claim may be taken over | ``21600`` |
| ``AIND_ANALYSIS_PIPES_LAUNCHER`` | out-of-process analyses: ``subprocess`` (local environments), ``ecs`` or ``k8s`` | ``subprocess`` |
| ``AIND_ANALYSIS_ENVIRONMENTS_DIR`` | cache of built analysis environments | ``$AIND_DATA_DIR/analysis-envs`` |
| ``AIND_ANALYSIS_MEMORY_LIMIT_MB`` | address-space limit of an out-of-process analysis (``0``: none) | ``4096`` |
| ``AIND_ANALYSIS_JOB_TIMEOUT_S`` | an out-of-process job running longer is killed and fails (``0``: none) | none |
| ``AIND_ANALYSIS_PIPES_STAGING_ROOT``, ``AIND_ANALYSIS_ECS_CLUSTER``, ``AIND_ANALYSIS_ECS_TASK_DEFINITION``, ``AIND_ANALYSIS_ECS_CONTAINER``, ``AIND_ANALYSIS_ECS_SUBNETS``, ``AIND_ANALYSIS_ECS_SECURITY_GROUPS``, ``AIND_ANALYSIS_K8S_NAMESPACE``, ``AIND_ANALYSIS_K8S_KUBECONFIG`` | production launches (docs/operations.md) | none |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field

EXAMPLE_DISPATCH_CONFIG = Path(__file__).resolve().parent / "examples" / "dispatch.yaml"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class AnalysisSettingsError(ValueError):
    """An analysis setting in the environment is invalid; the message names the variable."""


_PIPES_TEXT = {
    "AIND_ANALYSIS_PIPES_LAUNCHER": "launcher",
    "AIND_ANALYSIS_ENVIRONMENTS_DIR": "environments_dir",
    "AIND_ANALYSIS_PIPES_STAGING_ROOT": "staging_root",
    "AIND_ANALYSIS_ECS_CLUSTER": "ecs_cluster",
    "AIND_ANALYSIS_ECS_TASK_DEFINITION": "ecs_task_definition",
    "AIND_ANALYSIS_ECS_CONTAINER": "ecs_container",
    "AIND_ANALYSIS_ECS_SUBNETS": "ecs_subnets",
    "AIND_ANALYSIS_ECS_SECURITY_GROUPS": "ecs_security_groups",
    "AIND_ANALYSIS_K8S_NAMESPACE": "k8s_namespace",
    "AIND_ANALYSIS_K8S_KUBECONFIG": "k8s_kubeconfig",
}


class AnalysisSettings(BaseModel):
    dispatch_config: Path = EXAMPLE_DISPATCH_CONFIG
    analysis_modules: list[str] = Field(default_factory=list)
    partitions_collection: str = "dispatch_partitions"
    page_size: int = Field(1000, ge=1)
    tick_budget_s: float = Field(40.0, gt=0)
    sensor_interval_s: int = Field(60, ge=1)
    sensor_running: bool = False
    request_runs: bool = True
    remove_gone: bool = False
    sweep_batch: int = Field(1, ge=1)
    claim_timeout_s: float = Field(6 * 3600.0, gt=0)
    #: launchers.PipesLaunchSettings fields read from the environment (environments_dir
    #: defaults to $AIND_DATA_DIR/analysis-envs where the resource is built)
    pipes: dict[str, object] = Field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AnalysisSettings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}

        def text(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value and value.strip() else None

        def number(name: str, field: str, kind: type) -> None:
            raw = text(name)
            if raw is None:
                return
            try:
                values[field] = kind(raw)
            except ValueError:
                raise AnalysisSettingsError(
                    f"{name}={raw!r} is not a valid {kind.__name__}"
                ) from None

        def flag(name: str, field: str) -> None:
            raw = env.get(name)
            if raw is None:
                return
            low = raw.strip().lower()
            if low in _TRUE:
                values[field] = True
            elif low in _FALSE:
                values[field] = False
            else:
                raise AnalysisSettingsError(
                    f"{name}={raw!r}: use 1/0, true/false, yes/no or on/off"
                )

        if path := text("AIND_ANALYSIS_DISPATCH_CONFIG"):
            values["dispatch_config"] = Path(path)
        if modules := text("AIND_ANALYSIS_MODULES"):
            values["analysis_modules"] = [m.strip() for m in modules.split(",") if m.strip()]
        if coll := text("AIND_ANALYSIS_PARTITIONS_COLLECTION"):
            values["partitions_collection"] = coll
        number("AIND_ANALYSIS_PAGE_SIZE", "page_size", int)
        number("AIND_ANALYSIS_TICK_BUDGET_S", "tick_budget_s", float)
        number("AIND_ANALYSIS_SENSOR_INTERVAL_S", "sensor_interval_s", int)
        number("AIND_ANALYSIS_SWEEP_BATCH", "sweep_batch", int)
        number("AIND_ANALYSIS_CLAIM_TIMEOUT_S", "claim_timeout_s", float)
        flag("AIND_ANALYSIS_SENSOR_RUNNING", "sensor_running")
        flag("AIND_ANALYSIS_REQUEST_RUNS", "request_runs")
        flag("AIND_ANALYSIS_REMOVE_GONE", "remove_gone")
        pipes: dict[str, object] = {}
        for name, key in _PIPES_TEXT.items():
            if (raw := text(name)) is not None:
                pipes[key] = (
                    [v.strip() for v in raw.split(",") if v.strip()]
                    if key
                    in (
                        "ecs_subnets",
                        "ecs_security_groups",
                    )
                    else raw
                )
        if (limit := text("AIND_ANALYSIS_MEMORY_LIMIT_MB")) is not None:
            if not limit.isdigit():
                raise AnalysisSettingsError(f"AIND_ANALYSIS_MEMORY_LIMIT_MB={limit!r} is not MiB")
            pipes["memory_limit_mb"] = int(limit) or None
        if (timeout := text("AIND_ANALYSIS_JOB_TIMEOUT_S")) is not None:
            try:
                pipes["job_timeout_s"] = float(timeout) or None
            except ValueError:
                raise AnalysisSettingsError(
                    f"AIND_ANALYSIS_JOB_TIMEOUT_S={timeout!r} is not a number of seconds"
                ) from None
        values["pipes"] = pipes
        try:
            return cls(**values)
        except ValueError as exc:
            raise AnalysisSettingsError(f"invalid analysis settings: {exc}") from exc
