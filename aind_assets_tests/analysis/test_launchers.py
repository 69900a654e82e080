"""Production launches (ECS task, Kubernetes pod) up to the Pipes client call, and the runtime's
version check. The clients cannot run here (no cluster): their arguments are checked instead."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dagster_aws.pipes import PipesECSClient

from aind_assets.analysis.config import AnalysisSettings
from aind_assets.analysis.environments import (
    RUNTIME_VERSION,
    AnalysisEnvironment,
    default_runtime_source,
)
from aind_assets.analysis.launchers import (
    RUNTIME_COMMAND,
    PipesLaunchSettings,
    ecs_run_task_params,
    k8s_run_kwargs,
)
from aind_assets.analysis.pipes import build_pipes_client, environment_container

IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/spikes@sha256:" + "a" * 64
ENV = AnalysisEnvironment(entrypoint="spikes.run:run", image=IMAGE, env={"OMP_NUM_THREADS": "1"})


def test_settings_select_the_launcher_from_the_environment():
    settings = AnalysisSettings.from_env(
        {
            "AIND_ANALYSIS_PIPES_LAUNCHER": "ecs",
            "AIND_ANALYSIS_ECS_CLUSTER": "analysis",
            "AIND_ANALYSIS_ECS_TASK_DEFINITION": "aind-analysis:3",
            "AIND_ANALYSIS_ECS_SUBNETS": "subnet-1, subnet-2",
            "AIND_ANALYSIS_MEMORY_LIMIT_MB": "8192",
        }
    )
    launch = PipesLaunchSettings.model_validate(settings.pipes)
    assert launch.launcher == "ecs" and launch.ecs_subnets == ["subnet-1", "subnet-2"]
    assert launch.memory_limit_mb == 8192


def test_ecs_run_task_params_and_client():
    settings = PipesLaunchSettings(
        launcher="ecs",
        ecs_cluster="analysis",
        ecs_task_definition="aind-analysis:3",
        ecs_subnets=["subnet-1"],
        ecs_security_groups=["sg-1"],
        ecs_region="us-west-2",
    )
    params = ecs_run_task_params(ENV, settings, 8192)
    assert params["taskDefinition"] == "aind-analysis:3" and params["cluster"] == "analysis"
    override = params["overrides"]["containerOverrides"][0]
    assert override["command"] == RUNTIME_COMMAND and override["memory"] == 8192
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in override["environment"]
    assert params["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == ["subnet-1"]
    assert isinstance(build_pipes_client(settings), PipesECSClient)  # constructed, not run
    with pytest.raises(ValueError, match="task definition"):
        ecs_run_task_params(ENV, PipesLaunchSettings(launcher="ecs"), None)


def test_k8s_run_kwargs():
    kwargs = k8s_run_kwargs(ENV, PipesLaunchSettings(launcher="k8s", k8s_namespace="ai"), 2048)
    assert kwargs["image"] == IMAGE and kwargs["command"] == RUNTIME_COMMAND
    assert kwargs["namespace"] == "ai" and kwargs["env"] == {"OMP_NUM_THREADS": "1"}
    limits = kwargs["base_pod_spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"memory": "2048Mi"}


def test_the_image_digest_is_recorded_in_code():
    recorded = environment_container(ENV, "ecs")
    assert recorded["container"] == {
        "container_type": "docker",
        "tag": "sha256:" + "a" * 64,
        "uri": IMAGE,
    }


def test_runtime_version_matches_and_a_mismatch_fails_at_start(tmp_path: Path):
    pyproject = tomllib.loads((default_runtime_source() / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == RUNTIME_VERSION
    assert "dagster-pipes==1.13.27" in pyproject["project"]["dependencies"]
    # The worker, with a Pipes context expecting another version: it reports and exits 3.
    context = {"extras": {"runtime_version": "999.0"}, "asset_keys": None, "run_id": "r"}
    messages = tmp_path / "messages"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from dagster_pipes import PipesContext; PipesContext._instance = None;"
        "from aind_assets_runtime.worker import main; sys.exit(main())"
    )
    from dagster_pipes import encode_param

    env = {
        "DAGSTER_PIPES_CONTEXT": encode_param({"path": str(tmp_path / "ctx.json")}),
        "DAGSTER_PIPES_MESSAGES": encode_param({"path": str(messages)}),
    }
    (tmp_path / "ctx.json").write_text(json.dumps(context))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(default_runtime_source())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    sent = [json.loads(line) for line in messages.read_text().splitlines()]
    fatal = [m["params"]["payload"] for m in sent if m["method"] == "report_custom_message"]
    assert "platform expects 999.0" in fatal[0]["error"]
