"""Out-of-process analyses through Dagster Pipes (the Dagster layer of environments.py).

:func:`out_of_process` turns an analysis with an ``environment`` into one whose run function
sends the job to the analysis' own environment and returns the outputs it reports; the job
still goes through :func:`aind_assets.analysis.wrapper.run_job` (de-duplication, claim,
results folder, ``metadata.nd.json``, record written last), exactly as in process.

* ``subprocess`` (local): ``python -m aind_assets_runtime`` in the environment built by
  :func:`~aind_assets.analysis.environments.ensure_environment`, under a Pipes session (context
  in a temp file, messages tailed from a temp file). Jobs of one step share the process
  (``batch``), sent one JSON line at a time on its standard input; the child has an
  address-space limit (``RLIMIT_AS``), and a crash or a ``MemoryError`` fails that job only
  (the next job gets a fresh process).
* ``ecs`` / ``k8s`` (production): one task / pod per job from the analysis' image through
  dagster-aws ``PipesECSClient`` / dagster-k8s ``PipesK8sClient``; results go to a staging
  folder in the object store and are fetched into the job's results folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from aind_assets.analysis.environments import (
    RUNTIME_VERSION,
    AnalysisEnvironment,
    BuiltEnvironment,
    ensure_environment,
    environment_digest,
    find_python,
    python_version,
)
from aind_assets.analysis.launchers import (
    PipesLaunchSettings,
    ecs_run_task_params,
    k8s_run_kwargs,
)
from aind_assets.analysis.models import AnalysisDispatchModel
from aind_assets.analysis.registry import AnalysisDefinition
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url

__all__ = [
    "OutOfProcessError",
    "build_pipes_client",
    "SubprocessWorker",
    "environment_container",
    "out_of_process",
]


class OutOfProcessError(RuntimeError):
    """The analysis failed in its own process; the message holds its traceback."""


def environment_container(env: AnalysisEnvironment, launcher: str) -> dict[str, Any]:
    """What the job's ``Code`` records about the environment (part of the job's identity):
    ``container`` (virtualenv: sha256 of requirements + Python + runtime extras; image: its
    reference, digest when pinned), ``language`` and ``language_version``."""
    if launcher != "subprocess" and env.image:
        tag = env.image.split("@", 1)[1] if "@" in env.image else env.image.rsplit(":", 1)[-1]
        container = {"container_type": "docker", "tag": tag, "uri": env.image}
        return {"container": container, "language": "Python"}
    python = find_python(env.python)
    container = {
        "container_type": "virtualenv",
        "tag": f"sha256:{environment_digest(env, python)}",
        "uri": f"requirements:{Path(env.requirements or '').name}",
    }
    return {
        "container": container,
        "language": "Python",
        "language_version": python_version(python),
    }


def _memory_limiter(limit_mb: int | None) -> Callable[[], None] | None:
    if not limit_mb:
        return None
    limit = int(limit_mb) * 1024 * 1024

    def apply() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _exit_reason(code: int, limit_mb: int | None) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = (
            f" (it may have exceeded its memory limit of {limit_mb} MiB)"
            if -code == signal.SIGKILL and limit_mb
            else ""
        )
        return f"the analysis process was killed by {name}{hint}"
    return f"the analysis process exited with status {code} before reporting the job"


class SubprocessWorker:
    """``python -m aind_assets_runtime`` in a built environment, one Pipes session per process."""

    def __init__(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        built: BuiltEnvironment,
        env: AnalysisEnvironment,
        *,
        extras: Mapping[str, Any],
        child_env: Mapping[str, str],
        memory_limit_mb: int | None,
    ) -> None:
        self.context = context
        self.built = built
        self.env = env
        self.extras = dict(extras)
        self.child_env = dict(child_env)
        self.memory_limit_mb = memory_limit_mb
        self.processes_started = 0
        self._stack: ExitStack | None = None
        self._session: Any = None
        self._proc: subprocess.Popen[str] | None = None

    def _start(self) -> None:
        self._stack = ExitStack()
        self._session = self._stack.enter_context(
            dg.open_pipes_session(
                context=self.context,
                context_injector=dg.PipesTempFileContextInjector(),
                message_reader=dg.PipesTempFileMessageReader(),
                extras={**self.extras, "serve": True},
            )
        )
        paths = os.pathsep.join(str(Path(p).resolve()) for p in self.env.paths)
        env = {**self.child_env, **self.env.env, **self._session.get_bootstrap_env_vars()}
        env["PYTHONPATH"] = paths
        env.pop("VIRTUAL_ENV", None)
        self._proc = subprocess.Popen(
            [str(self.built.python), "-m", "aind_assets_runtime"],
            stdin=subprocess.PIPE,
            env=env,
            text=True,
            preexec_fn=_memory_limiter(self.memory_limit_mb),  # noqa: PLW1509 - rlimit only
        )
        self.processes_started += 1

    def _reply(self, job_id: str) -> dict[str, Any] | None:
        for message in self._session.get_custom_messages() if self._session else ():
            if isinstance(message, Mapping):
                if message.get("kind") == "aind.job" and message.get("id") == job_id:
                    return dict(message)
                if message.get("kind") == "aind.fatal":
                    return {"ok": False, "error": message.get("error"), "fatal": True}
        return None

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Send ``job`` to the process (starting one if needed); its reply."""
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            self._start()
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died: reported below from its exit status
        while True:
            reply = self._reply(job["id"])
            if reply is not None:
                if reply.get("fatal") or not self.env.batch:
                    self.close()
                return reply
            code = self._proc.poll()
            if code is not None:
                self.close()  # joins the message reader: every message written is in now
                return self._reply(job["id"]) or {
                    "ok": False,
                    "error": _exit_reason(code, self.memory_limit_mb),
                    "died": True,
                }
            time.sleep(0.002)

    def close(self) -> None:
        """End the process (an empty line ends its job loop) and the Pipes session."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write("\n")
                    proc.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()


def build_pipes_client(settings: PipesLaunchSettings) -> Any:
    """The production Pipes client of ``settings.launcher`` (``ecs`` or ``k8s``).

    ECS: dagster-aws ``PipesECSClient`` (messages from the task's CloudWatch logs, the awslogs
    driver of its task definition). Kubernetes: dagster-k8s ``PipesK8sClient`` (messages from
    the pod's logs); dagster-k8s is not a dependency of the platform: install
    ``dagster-k8s==0.29.27`` into the production image to use it."""
    if settings.launcher == "ecs":
        import boto3  # type: ignore[import-untyped]
        from dagster_aws.pipes import PipesCloudWatchMessageReader, PipesECSClient

        region = settings.ecs_region
        return PipesECSClient(
            client=boto3.client("ecs", region_name=region),
            message_reader=PipesCloudWatchMessageReader(
                client=boto3.client("logs", region_name=region)
            ),
        )
    if settings.launcher == "k8s":
        try:
            from dagster_k8s import PipesK8sClient  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise RuntimeError(
                "AIND_ANALYSIS_PIPES_LAUNCHER=k8s needs dagster-k8s==0.29.27 installed"
            ) from exc
        return PipesK8sClient()
    raise ValueError(f"no Pipes client for launcher {settings.launcher!r}")


def _failure(definition: AnalysisDefinition, reply: Mapping[str, Any], limit: int | None) -> str:
    error = str(reply.get("error") or "unknown error")
    if reply.get("memory"):
        error = f"it exceeded its memory limit ({limit} MiB): {error}"
    trace = reply.get("traceback")
    where = " (out of process)"
    return f"{error}{where}" + (f"\nTraceback of the analysis:\n{trace}" if trace else "")


def _job(
    definition: AnalysisDefinition, task: AnalysisDispatchModel, params: Any
) -> dict[str, Any]:
    env = definition.environment
    assert env is not None
    return {
        "id": uuid.uuid4().hex,
        "analysis": definition.name,
        "entrypoint": env.entrypoint,
        "spec": env.spec,
        "task": task.model_dump(mode="json", exclude={"analysis_code"}),
        "parameters": params.model_dump(mode="json"),
    }


def _storage(store: ObjectStoreResource) -> tuple[dict[str, Any], dict[str, str]]:
    """Object-store access for the analysis: options in the extras, credentials in its env."""
    storage = {
        "endpoint_url": store.endpoint_url,
        "region": store.region,
        "anonymous_buckets": list(store.anonymous_buckets),
    }
    secrets = {}
    if store.access_key_id:
        secrets["AWS_ACCESS_KEY_ID"] = store.access_key_id
    if store.secret_access_key:
        secrets["AWS_SECRET_ACCESS_KEY"] = store.secret_access_key
    return storage, secrets


@contextmanager
def out_of_process(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    definition: AnalysisDefinition,
    *,
    store: ObjectStoreResource,
    settings: PipesLaunchSettings,
) -> Iterator[AnalysisDefinition]:
    """``definition`` whose run function runs out of process (itself when in process)."""
    env = definition.environment
    if env is None:
        yield definition
        return
    storage, secrets = _storage(store)
    extras = {"runtime_version": RUNTIME_VERSION, "storage": storage}
    limit = env.memory_limit_mb or settings.memory_limit_mb
    if settings.launcher == "subprocess":
        built = ensure_environment(
            definition.name,
            env,
            cache_dir=Path(settings.environments_dir),
            uv=settings.uv_binary(),
            runtime_source=Path(settings.runtime_source) if settings.runtime_source else None,
        )
        context.log.info(
            f"{definition.name}: environment {built.path} "
            f"({'reused' if built.reused else 'built'}; lock sha256 {built.lock_hash[:12]})"
        )
        worker = SubprocessWorker(
            context,
            built,
            env,
            extras=extras,
            child_env={**os.environ, **secrets},
            memory_limit_mb=limit,
        )

        def run_local(task: AnalysisDispatchModel, params: Any, ctx: Any) -> Any:
            job = {**_job(definition, task, params), "results_dir": str(ctx.results_dir)}
            reply = worker.run(job)
            if not reply.get("ok"):
                raise OutOfProcessError(_failure(definition, reply, limit))
            return reply.get("outputs")

        try:
            yield dataclasses.replace(definition, run=run_local)
        finally:
            worker.close()
        return

    client = build_pipes_client(settings)

    def run_remote(task: AnalysisDispatchModel, params: Any, ctx: Any) -> Any:
        job = _job(definition, task, params)
        staging = join_url(settings.staging_root or store.root, ".pipes-staging", job["id"])
        job["staging_url"] = staging
        call_extras = {**extras, "jobs": [job], "serve": False}
        if settings.launcher == "ecs":
            invocation = client.run(
                context=context,
                run_task_params=ecs_run_task_params(env, settings, limit),
                extras=call_extras,
            )
        else:
            invocation = client.run(
                context=context, extras=call_extras, **k8s_run_kwargs(env, settings, limit)
            )
        replies = [
            m
            for m in invocation.get_custom_messages()
            if isinstance(m, Mapping) and m.get("id") == job["id"]
        ]
        try:
            if not replies or not replies[0].get("ok"):
                raise OutOfProcessError(
                    _failure(definition, replies[0] if replies else {"error": "no reply"}, limit)
                )
            for info in store.list_objects(staging):
                rel = info.url[len(staging) :].lstrip("/")
                local = Path(ctx.results_dir) / rel
                local.parent.mkdir(parents=True, exist_ok=True)
                store.get_file(info.url, local)
            return replies[0].get("outputs")
        finally:
            store.delete(staging, recursive=True)

    yield dataclasses.replace(definition, run=run_remote)
