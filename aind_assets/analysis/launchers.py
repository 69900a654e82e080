"""How out-of-process analyses are launched, and the production clients' call arguments
(pure: no Dagster).

``launcher`` is ``subprocess`` (local virtual environments, the default), ``ecs`` (one ECS task
per job, dagster-aws ``PipesECSClient``) or ``k8s`` (one pod per job, dagster-k8s
``PipesK8sClient``). The functions here build what those clients are called with; the calls
themselves are in :mod:`aind_assets.analysis.pipes`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field

from aind_assets.analysis.environments import AnalysisEnvironment

__all__ = [
    "RUNTIME_COMMAND",
    "PipesLaunchSettings",
    "ecs_run_task_params",
    "ecs_waiter_config",
    "k8s_run_kwargs",
]

#: What runs in the analysis' environment or image.
RUNTIME_COMMAND = ["python", "-m", "aind_assets_runtime"]


class PipesLaunchSettings(BaseModel):
    launcher: Literal["subprocess", "ecs", "k8s"] = "subprocess"
    environments_dir: str = Field("data/analysis-envs", description="cache of built environments")
    memory_limit_mb: int | None = Field(4096, description="address-space limit of a local run")
    job_timeout_s: float | None = Field(None, description="a job running longer is killed")
    runtime_source: str | None = Field(None, description="runtime/ source tree (default: repo)")
    uv: str | None = Field(None, description="uv binary (default: the installed uv package)")
    staging_root: str | None = Field(None, description="remote results staging (default: store)")
    ecs_cluster: str | None = None
    ecs_task_definition: str | None = None
    ecs_container: str = "analysis"
    ecs_launch_type: str = "FARGATE"
    ecs_subnets: list[str] = Field(default_factory=list)
    ecs_security_groups: list[str] = Field(default_factory=list)
    ecs_region: str | None = None
    k8s_namespace: str = "default"
    k8s_service_account: str | None = None
    k8s_kubeconfig: str | None = Field(None, description="kube config file (default: in-cluster)")

    def uv_binary(self) -> str:
        if self.uv:
            return self.uv
        import uv  # the pinned PyPI package ships the binary

        return str(uv.find_uv_bin())


def ecs_run_task_params(
    env: AnalysisEnvironment, settings: PipesLaunchSettings, memory_limit_mb: int | None
) -> dict[str, Any]:
    """``run_task_params`` of ``PipesECSClient.run``: the analysis' task definition (its image;
    the analysis' own ``task_definition`` or the setting), the runtime command and the memory
    limit as container overrides. The client adds the Pipes context to the environment."""
    task_definition = env.task_definition or settings.ecs_task_definition
    if not task_definition:
        raise ValueError(
            "ECS launches need a task definition: the environment's task_definition or "
            "AIND_ANALYSIS_ECS_TASK_DEFINITION"
        )
    override: dict[str, Any] = {
        "name": settings.ecs_container,
        "command": list(RUNTIME_COMMAND),
        "environment": [{"name": k, "value": v} for k, v in sorted(env.env.items())],
    }
    if memory_limit_mb:
        override["memory"] = int(memory_limit_mb)
    params: dict[str, Any] = {
        "taskDefinition": task_definition,
        "launchType": settings.ecs_launch_type,
        "count": 1,
        "overrides": {"containerOverrides": [override]},
    }
    if settings.ecs_cluster:
        params["cluster"] = settings.ecs_cluster
    if settings.ecs_subnets:
        params["networkConfiguration"] = {
            "awsvpcConfiguration": {
                "subnets": list(settings.ecs_subnets),
                "securityGroups": list(settings.ecs_security_groups),
                "assignPublicIp": "DISABLED",
            }
        }
    return params


def ecs_waiter_config(timeout_s: float | None) -> dict[str, int] | None:
    """``waiter_config`` of ``PipesECSClient.run``: stop waiting for the task after
    about ``timeout_s`` (polling every 6 s): the job then fails. ECS has no task time limit of its
    own: the task is not stopped by this (docs/operations.md)."""
    if not timeout_s:
        return None
    return {"Delay": 6, "MaxAttempts": max(1, math.ceil(timeout_s / 6))}


def k8s_run_kwargs(
    env: AnalysisEnvironment,
    settings: PipesLaunchSettings,
    memory_limit_mb: int | None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``PipesK8sClient.run`` (besides context and extras): the image, the
    runtime command, the namespace, the environment and a pod spec with the memory limit and
    the job's time limit (``active_deadline_seconds``: the kubelet kills the pod)."""
    if not env.image:
        raise ValueError("Kubernetes launches need the environment's image")
    container: dict[str, Any] = {}
    if memory_limit_mb:
        memory = f"{int(memory_limit_mb)}Mi"
        container["resources"] = {"limits": {"memory": memory}, "requests": {"memory": memory}}
    pod_spec: dict[str, Any] = {"restart_policy": "Never", "containers": [container]}
    if settings.k8s_service_account:
        pod_spec["service_account_name"] = settings.k8s_service_account
    if timeout_s:
        pod_spec["active_deadline_seconds"] = max(1, math.ceil(timeout_s))
    return {
        "image": env.image,
        "command": list(RUNTIME_COMMAND),
        "namespace": settings.k8s_namespace,
        "env": dict(env.env),
        "base_pod_spec": pod_spec,
    }
