"""Production launches (ECS task, Kubernetes pod) up to the Pipes client call, and the runtime's
version check. The clients cannot run here (no cluster): their arguments are checked instead."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster_aws.pipes import PipesECSClient
from dagster_k8s import PipesK8sClient

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
from aind_assets.analysis.models import AnalysisDispatchModel
from aind_assets.analysis.pipes import build_pipes_client, environment_container, out_of_process
from aind_assets.analysis.registry import load_analyses
from aind_assets_tests.analysis.external import registration

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
    assert "active_deadline_seconds" not in kwargs["base_pod_spec"]
    timed = k8s_run_kwargs(ENV, PipesLaunchSettings(launcher="k8s"), None, 90.5)
    assert timed["base_pod_spec"]["active_deadline_seconds"] == 91
    assert isinstance(build_pipes_client(PipesLaunchSettings(launcher="k8s")), PipesK8sClient)


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


class _ApiServer:
    """A stand-in ECS or Kubernetes API endpoint on localhost: records each request the real
    client sends (target/path and JSON body), answers ECS' DescribeTaskDefinition, and refuses
    the launch itself (RunTask / pod creation) with 403: there is no cluster here."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                target = self.headers.get("X-Amz-Target") or self.path
                outer.requests.append((target, body))
                if target.endswith("DescribeTaskDefinition"):
                    container = {"name": "analysis", "image": IMAGE}
                    reply, status = {"taskDefinition": {"containerDefinitions": [container]}}, 200
                elif "X-Amz-Target" in self.headers:
                    reply, status = {"__type": "AccessDeniedException", "message": "no"}, 400
                else:
                    reply = {"kind": "Status", "status": "Failure", "reason": "Forbidden"}
                    status = 403
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _ApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _launch(world, settings: PipesLaunchSettings, tmp_path: Path) -> list[str]:
    """One job of old_numpy_stats (with an image) through ``out_of_process`` in a real Dagster
    step with the real Pipes client of ``settings``; the errors it raised."""
    env = dataclasses.replace(registration.ENVIRONMENT, image=IMAGE, timeout_s=600.0)
    definition = dataclasses.replace(
        load_analyses([registration.__name__]).get(registration.NAME), environment=env
    )
    task = AnalysisDispatchModel(
        s3_location=[world.store.url("data-assets/a")],
        asset_name=["a"],
        docdb_record_id=["1"],
        file_location=[world.store.url("data-assets/a/a.nwb")],
    )
    params = definition.validate_parameters({"analysis_name": registration.NAME})
    errors: list[str] = []

    @dg.asset
    def probe(context):  # noqa: ANN001 - Dagster reads the annotation
        with out_of_process(context, definition, store=world.store, settings=settings) as run:
            try:
                run.run(task, params, SimpleNamespace(results_dir=tmp_path))
            except Exception as exc:  # noqa: BLE001 - the refused launch, checked by the test
                errors.append(f"{type(exc).__name__}: {exc}")
        return dg.Output(None)  # a Pipes session asks for a typed event stream

    assert dg.materialize([probe]).success
    return errors


def test_ecs_and_k8s_clients_send_the_launch_with_the_pipes_bootstrap(
    world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with _ApiServer() as api:
        monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", api.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", api.url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        ecs = PipesLaunchSettings(
            launcher="ecs",
            ecs_cluster="analysis",
            ecs_task_definition="aind-analysis:3",
            ecs_region="us-west-2",
            memory_limit_mb=2048,
        )
        errors = _launch(world, ecs, tmp_path)
        assert len(errors) == 1 and "AccessDenied" in errors[0]
        run_task = next(body for target, body in api.requests if target.endswith(".RunTask"))
        assert run_task["taskDefinition"] == "aind-analysis:3"
        assert run_task["cluster"] == "analysis"
        override = run_task["overrides"]["containerOverrides"][0]
        assert override["name"] == "analysis" and override["command"] == RUNTIME_COMMAND
        assert override["memory"] == registration.MEMORY_LIMIT_MB  # the analysis' own limit
        names = {e["name"] for e in override["environment"]}
        assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "OPENBLAS_NUM_THREADS"} <= names

        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": api.url}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        k8s = PipesLaunchSettings(
            launcher="k8s", k8s_namespace="ai", k8s_kubeconfig=str(kubeconfig)
        )
        errors = _launch(world, k8s, tmp_path)
        assert len(errors) == 1 and "403" in errors[0]
        path, pod = next((p, b) for p, b in api.requests if p.endswith("/pods"))
        assert path == "/api/v1/namespaces/ai/pods"
        assert (
            pod["spec"]["activeDeadlineSeconds"] == 600 and pod["spec"]["restartPolicy"] == "Never"
        )
        container = pod["spec"]["containers"][0]
        assert container["image"] == IMAGE and container["command"] == RUNTIME_COMMAND
        assert container["resources"]["limits"] == {"memory": f"{registration.MEMORY_LIMIT_MB}Mi"}
        names = {e["name"] for e in container["env"]}
        assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "OPENBLAS_NUM_THREADS"} <= names


DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "analysis-pipes"


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def test_the_deploy_examples_are_valid_launch_settings():
    ecs = PipesLaunchSettings.model_validate(
        AnalysisSettings.from_env(_env_file(DEPLOY / "ecs.env")).pipes
    )
    assert ecs.launcher == "ecs" and ecs.ecs_task_definition and len(ecs.ecs_subnets) == 2
    assert ecs.job_timeout_s == 21600 and ecs.memory_limit_mb == 8192
    k8s = PipesLaunchSettings.model_validate(
        AnalysisSettings.from_env(_env_file(DEPLOY / "k8s.env")).pipes
    )
    assert k8s.launcher == "k8s" and k8s.k8s_namespace == "aind-analysis"
    task = json.loads((DEPLOY / "ecs-task-definition.json").read_text())
    container = task["containerDefinitions"][0]
    assert container["name"] == ecs.ecs_container and container["command"] == RUNTIME_COMMAND
    assert container["logConfiguration"]["logDriver"] == "awslogs"  # Pipes messages
