"""The production profile (deploy/dagster.yaml) for real: PostgreSQL, the run queue, S3 logs.

The shipped file is validated as is (every setting from the environment, no secret), section by
section against the schemas of the classes it names, without a server; the test on PostgreSQL
then opens it whole (Dagster's instance schema, the concurrency settings). ECS is not available
here, so the end-to-end test uses the same profile with only ``run_launcher`` swapped for the
``DefaultRunLauncher``: a ``dagster-daemon`` on a real PostgreSQL dequeues the runs of a
``dagster job backfill``, and the test proves they all succeed, that no more ran at once than the
tag concurrency limits allow, and that their compute logs landed in (real) S3.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from aind_assets.servers import ManagedServer
from aind_assets_tests.deploy.conftest import PostgresServer
from aind_assets_tests.deploy.queue_defs import PARTITIONS

PROJECT = Path(__file__).resolve().parents[2]
PROFILE = PROJECT / "deploy" / "dagster.yaml"
BIN = Path(sys.executable).parent
FLOW_TAG = "aind/flow"
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}

PROFILE_ENV = {
    "DAGSTER_PG_HOST": "db.example.internal",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "not-a-real-password",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_COMPUTE_LOGS_BUCKET": "aind-dagster-logs",
    "DAGSTER_COMPUTE_LOGS_PREFIX": "compute-logs",
    "DAGSTER_COMPUTE_LOGS_ENDPOINT_URL": "https://s3.us-west-2.amazonaws.com",
    "DAGSTER_ECS_TASK_DEFINITION": "aind-assets-run",
    "DAGSTER_ECS_CONTAINER_NAME": "run",
    "DAGSTER_ECS_CLUSTER": "aind-assets",
}


def load_profile() -> dict[str, Any]:
    return yaml.safe_load(PROFILE.read_text())


def write_home(home: Path, profile: Mapping[str, Any]) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(dict(profile), sort_keys=False))
    return home


def with_default_launcher(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The production profile with only the run launcher replaced (runs as local processes)."""
    return {
        **profile,
        "run_launcher": {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"},
    }


def configurable_class(class_data: Mapping[str, Any]) -> type:
    """The class a profile section names, through public imports only."""
    module, name = class_data["module"], class_data["class"]
    if module.startswith("dagster.core."):  # Dagster's own classes are exported at the top level
        return getattr(dg, name)
    return getattr(importlib.import_module(module), name)


def resolve(class_data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A configurable class's config resolved against its own schema (``env:`` values read).

    The schema becomes an op's config schema, so Dagster's public ``validate_run_config`` checks
    it, fills the defaults and reads the ``env:`` values exactly as the instance would; an
    invalid config raises ``DagsterInvalidConfigError``.
    """
    cls = configurable_class(class_data)

    @dg.op(name="section", config_schema=cls.config_type())
    def section() -> None: ...

    @dg.job(name="profile_section")
    def profile_section() -> None:
        section()

    run_config = {"ops": {"section": {"config": class_data.get("config", {})}}}
    return dg.validate_run_config(profile_section, run_config)["ops"]["section"]["config"]


def limit_for(profile: Mapping[str, Any], tags: Mapping[str, str]) -> int:
    """How many runs with these tags may be in progress at once under the profile's limits."""
    runs = profile["concurrency"]["runs"]
    limits = [runs["max_concurrent_runs"]]
    for rule in runs.get("tag_concurrency_limits") or []:
        if rule["key"] in tags and ("value" not in rule or rule["value"] == tags[rule["key"]]):
            limits.append(rule["limit"])
    return min(limits)


def peak_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # ends first
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def walk(node: Any) -> Iterable[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# -- the shipped file -------------------------------------------------------------------------
def test_shipped_profile_validates_and_reads_everything_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in PROFILE_ENV.items():
        monkeypatch.setenv(name, value)
    config = load_profile()
    assert "instance_class" not in config  # the standard DagsterInstance

    pg = config["storage"]["postgres"]["postgres_db"]
    assert all(isinstance(v, dict) and set(v) == {"env"} for v in pg.values()), pg
    assert {v["env"] for v in pg.values()} == {
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_USER",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_DB",
    }
    # every env var the file names is documented in the operations chapter
    names = {n["env"] for n in walk(config) if isinstance(n, dict) and set(n) == {"env"}}
    assert names == set(PROFILE_ENV)
    ops = (PROJECT / "docs" / "operations.md").read_text()
    assert all(name in ops for name in names), sorted(n for n in names if n not in ops)
    # no secret-looking literal anywhere
    text = PROFILE.read_text().lower()
    for word in ("password:", "secret_access_key", "aws_access_key_id"):
        for line in text.splitlines():
            if word in line and not line.lstrip().startswith("#"):
                assert "{env:" in line, line

    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    flows = {
        r.get("value"): r["limit"]
        for r in config["concurrency"]["runs"]["tag_concurrency_limits"]
        if r["key"] == FLOW_TAG
    }
    assert set(flows) == {"analysis", "hbcd"}
    assert any(
        r["key"] == "dagster/backfill" and "value" not in r
        for r in config["concurrency"]["runs"]["tag_concurrency_limits"]
    )
    assert config["concurrency"]["pools"]["default_limit"] >= 1

    # the configurable classes accept their config, with the env values resolved
    launcher = resolve(config["run_launcher"])
    assert config["run_launcher"]["class"] == "EcsRunLauncher"
    assert launcher["task_definition"] == {
        "env": "DAGSTER_ECS_TASK_DEFINITION"
    }  # read by the launcher
    assert launcher["run_task_kwargs"]["cluster"] == "aind-assets"
    logs = resolve(config["compute_logs"])
    assert config["compute_logs"]["class"] == "S3ComputeLogManager"
    assert logs["bucket"] == "aind-dagster-logs"
    assert logs["endpoint_url"] == PROFILE_ENV["DAGSTER_COMPUTE_LOGS_ENDPOINT_URL"]
    coordinator = resolve(config["run_coordinator"])
    assert coordinator["dequeue_interval_seconds"] == 5
    postgres = {"module": "dagster_postgres", "class": "DagsterPostgresStorage"}
    storage = resolve({**postgres, "config": config["storage"]["postgres"]})  # storage: postgres
    assert storage["postgres_db"]["hostname"] == PROFILE_ENV["DAGSTER_PG_HOST"]
    assert storage["postgres_db"]["port"] == int(PROFILE_ENV["DAGSTER_PG_PORT"])
    assert "K8sRunLauncher" in PROFILE.read_text()  # the documented alternative

    # a missing variable is an error, not a silent default
    monkeypatch.delenv("DAGSTER_ECS_CLUSTER")
    with pytest.raises(
        dg.DagsterInvalidConfigError,
        match=r'environment variable "DAGSTER_ECS_CLUSTER" which is not set',
    ):
        resolve(config["run_launcher"])


@pytest.mark.servers
def test_shipped_profile_opens_on_postgres_and_s3(
    postgres_server: PostgresServer,
    s3_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The file as shipped (ECS launcher untouched) opens its storage and compute logs."""
    bucket = f"dagster-logs-{uuid.uuid4().hex[:8]}"
    env = {
        **postgres_server.env(postgres_server.create_database()),
        **s3_env,
        **_log_env(s3_env, bucket),
        "DAGSTER_ECS_TASK_DEFINITION": "aind-assets-run",
        "DAGSTER_ECS_CONTAINER_NAME": "run",
        "DAGSTER_ECS_CLUSTER": "aind-assets",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _make_bucket(s3_env, bucket)
    home = write_home(tmp_path / "home", load_profile())
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 4
        assert instance.get_runs() == []
        launcher = instance.get_ref().run_launcher_data  # left unbuilt: it would call AWS
        assert launcher is not None and launcher.class_name == "EcsRunLauncher"


def _log_env(s3_env: Mapping[str, str], bucket: str) -> dict[str, str]:
    return {
        "DAGSTER_COMPUTE_LOGS_BUCKET": bucket,
        "DAGSTER_COMPUTE_LOGS_PREFIX": "compute-logs",
        "DAGSTER_COMPUTE_LOGS_ENDPOINT_URL": s3_env["AIND_S3_ENDPOINT_URL"],
    }


def _s3(s3_env: Mapping[str, str]):
    return boto3.client(
        "s3",
        endpoint_url=s3_env["AIND_S3_ENDPOINT_URL"],
        aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def _make_bucket(s3_env: Mapping[str, str], bucket: str) -> None:
    _s3(s3_env).create_bucket(Bucket=bucket)


# -- end to end: daemon + queue on PostgreSQL -----------------------------------------------------
@pytest.mark.servers
@pytest.mark.timeout(240)
def test_queued_runs_respect_the_concurrency_limits(
    postgres_server: PostgresServer,
    s3_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    profile = with_default_launcher(load_profile())
    home = write_home(tmp_path / "home", profile)
    records = tmp_path / "records"
    records.mkdir()
    bucket = f"dagster-logs-{uuid.uuid4().hex[:8]}"
    _make_bucket(s3_env, bucket)
    env = {
        **postgres_server.env(postgres_server.create_database()),
        **s3_env,
        **_log_env(s3_env, bucket),
        "AWS_REGION": "us-east-1",
        "DAGSTER_HOME": str(home),
        "AIND_QUEUE_TEST_DIR": str(records),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {
                        "python_module": {
                            "module_name": "aind_assets_tests.deploy.queue_defs",
                            "working_directory": str(PROJECT),
                        }
                    }
                ]
            }
        )
    )

    daemon = ManagedServer(
        "dagster-daemon",
        [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
        0,
        tmp_path / "daemon.log",
        env,
    )
    daemon.ready = lambda: True  # type: ignore[method-assign]  # no port: progress is polled below
    started = time.monotonic()
    with daemon, DagsterInstance.from_config(str(home)) as instance:
        # queue one run per partition (the CLI submits them to the QueuedRunCoordinator)
        out = subprocess.run(
            [
                str(BIN / "dagster"),
                "job",
                "backfill",
                "-w",
                str(workspace),
                "-j",
                "queue_job",
                "--all",
                "--noprompt",
            ],
            cwd=tmp_path,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        runs = _wait_for_runs(instance, daemon, len(PARTITIONS), timeout=150)
        elapsed = time.monotonic() - started

        assert [r.dagster_run.status for r in runs] == [DagsterRunStatus.SUCCESS] * len(
            PARTITIONS
        ), _log_tail(daemon)
        tags = runs[0].dagster_run.tags
        assert tags[FLOW_TAG] == "analysis"
        assert "dagster/backfill" in tags
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in runs) == sorted(PARTITIONS)
        for run in runs:  # each went through the queue: enqueued by the CLI, launched by the daemon
            for event_type in (DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING):
                assert instance.all_logs(run.dagster_run.run_id, of_type=event_type), event_type
        limit = limit_for(profile, tags)
        assert limit < len(PARTITIONS), "the test must queue more runs than the limit"

        # run intervals as recorded in the PostgreSQL run storage
        run_intervals = [(r.start_time, r.end_time) for r in runs]
        assert all(s and e for s, e in run_intervals)
        run_peak = peak_overlap(run_intervals)  # type: ignore[arg-type]
        # asset bodies, as recorded by the runs themselves
        bodies = [json.loads((records / f"{p}.json").read_text()) for p in PARTITIONS]
        body_peak = peak_overlap([(b["start"], b["end"]) for b in bodies])
        assert run_peak <= limit, (run_peak, limit, run_intervals)
        assert body_peak <= limit, (body_peak, limit, bodies)
        assert run_peak >= 2, (
            f"the queue should run several at once (peak {run_peak}, limit {limit})"
        )

        # step logs went to S3
        keys = [o["Key"] for o in _s3(s3_env).list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert any(k.startswith("compute-logs/") for k in keys), keys
        logged = b"".join(_s3(s3_env).get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys)
        assert b"queued partition p1 started" in logged
    t0 = min(r.create_timestamp.timestamp() for r in runs)
    timeline = ", ".join(
        f"{r.dagster_run.tags['dagster/partition']} {r.start_time - t0:.1f}-{r.end_time - t0:.1f}"  # type: ignore[operator]
        for r in sorted(runs, key=lambda r: r.start_time or 0)
    )
    print(
        f"{len(PARTITIONS)} runs, limit {limit}, peak {run_peak}, {elapsed:.1f} s; runs (s after queued): {timeline}"
    )


def _wait_for_runs(instance: DagsterInstance, daemon: ManagedServer, count: int, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        records = instance.get_run_records(RunsFilter(job_name="queue_job"))
        if len(records) == count and all(r.dagster_run.status in FINISHED for r in records):
            return records
        if daemon.proc is not None and daemon.proc.poll() is not None:
            pytest.fail(
                f"dagster-daemon exited with {daemon.proc.returncode}:\n{_log_tail(daemon)}"
            )
        if time.monotonic() > deadline:
            statuses = [r.dagster_run.status.value for r in records]
            pytest.fail(f"runs not finished after {timeout} s: {statuses}\n{_log_tail(daemon)}")
        time.sleep(0.5)


def _log_tail(server: ManagedServer) -> str:
    return server.log_path.read_text(errors="replace")[-4000:] if server.log_path.exists() else ""
