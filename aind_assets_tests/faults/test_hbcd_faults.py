"""HBCD de-identified sessions under faults: S3 killed mid-session, DocDB killed at the
session's IO-manager record, the run process killed mid-session. Before the re-run, processing
refuses the half session, naming it, and discovery asks for it again; after the re-run the
session's files are exactly its current source's, with one ledger entry, one current record
and ``processing.json`` per output, and no writing marker. Release staging with S3 killed
between copy and promote: the re-run stages exactly the planned files, once."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from aind_assets.hbcd.deid.commit import marker_url
from aind_assets.hbcd.deid.discovery import plan_requests
from aind_assets.hbcd.deid.ledger import discover_sessions
from aind_assets.hbcd.keys import SESSION_DERIVATIVES
from aind_assets.hbcd.release import staging
from aind_assets.hbcd.release.assets import release_ready_sessions, release_staging
from aind_assets_tests.faults import flows
from aind_assets_tests.faults.conftest import FaultServers, run_killed
from aind_assets_tests.faults.flows import Env

#: (what dies, when): the 2nd of the 3 changed files starts (1 file new, 2 old), or the
#: IO manager is about to write the session value's pending DocDB record.
CASES = [("s3", "2"), ("mongo", "version_written"), ("run", "2")]


@pytest.mark.parametrize(("dies", "step"), CASES, ids=[f"{d}-at-{s}" for d, s in CASES])
def test_a_half_written_session_is_never_consumed_and_is_redone(
    fault_servers: FaultServers, env: Env, tmp_path: Path, dies: str, step: str
) -> None:
    idmap, key = flows.hbcd_setup(env, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert flows.run_hbcd(env, instance, key, flows.HBCD_ALL).success
    files = flows.check_session(env, idmap, key)
    assert flows.change_source(env, idmap) == 3

    if dies == "run":
        assert run_killed("hbcd", step, fault_servers, env) == -signal.SIGKILL
    else:
        server = fault_servers.server(dies)
        fired: list[str] = []

        def kill(at: str = step) -> None:
            if at == step and not fired:
                fired.append(at)
                server.kill()

        if dies == "s3":
            with flows.on_file(int(step), kill):
                result = flows.run_hbcd(env, instance, key, flows.HBCD_SESSION)
        else:
            result = flows.run_hbcd(env, instance, key, flows.HBCD_SESSION, checkpoint=kill)
        assert fired and not result.success
        text = flows.failure_text(result)
        if dies == "s3":  # the error names what was unreachable
            assert f"127.0.0.1:{server.port}" in text and "endpoint" in text.lower(), text
        else:
            assert f"DocDB at 127.0.0.1:{server.port}" in text, text
        fault_servers.restart(dies, env)

    if step == "2":  # a real mix: the first changed file new, the other two old
        current = flows.from_current_source(env, idmap)
        assert sorted(current.values()).count(False) == 2, current
    # the session is marked as not complete ...
    layout = flows.hbcd_layout(env)
    assert env.store.exists(marker_url(layout.deidentified_root, key))
    # ... so processing refuses it, naming it, and nothing downstream is materialized
    refused = flows.run_hbcd(env, instance, key, [flows.session_derivatives])
    assert not refused.success
    text = flows.failure_text(refused)
    assert key in text and "did not complete" in text, text
    assert flows.materializations(instance, SESSION_DERIVATIVES, key) == 1
    # ... and discovery asks for it again (the ledger alone would say done after a DocDB fault)
    found = discover_sessions(env.store, layout, idmap)
    assert list(plan_requests(found.discovery, found.ledger, idmap).sessions) == [key]

    # the re-run redoes it; every count is exact
    assert flows.run_hbcd(env, instance, key, flows.HBCD_ALL).success
    assert flows.check_session(env, idmap, key) == files
    counts = flows.check_outputs(env, flows.hbcd_outputs(key))
    assert (counts.outputs, counts.pointers, counts.current_records) == (2, 2, 2)
    assert counts.versions == counts.processing_files <= 4
    assert flows.materializations(instance, SESSION_DERIVATIVES, key) == 2


def test_release_staging_killed_between_copy_and_promote_is_redone(
    fault_servers: FaultServers, env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res, resources = flows.release_resources(env, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    release = flows.register(res, instance)
    original = staging.stage_release
    fired: list[str] = []

    def stage_release(*args: Any, guard: Callable[[], None], **kwargs: Any) -> Any:
        def killing_guard() -> None:  # first called once the copy is checked, before promoting
            if not fired:
                fired.append("promote")
                fault_servers.s3.kill()
            guard()

        return original(*args, guard=killing_guard, **kwargs)

    monkeypatch.setattr(staging, "stage_release", stage_release)
    assets = [release_ready_sessions, release_staging]
    result = dg.materialize(
        assets, partition_key=release, resources=resources, instance=instance, raise_on_error=False
    )
    assert fired and not result.success
    text = flows.failure_text(result)
    assert f"127.0.0.1:{fault_servers.s3.port}" in text and "endpoint" in text.lower(), text
    fault_servers.restart("s3", env)
    url = res.release_url(release)
    left = {i.relative_to(url).split("/", 1)[0] for i in env.store.list_objects(url)}
    assert any(n.startswith(".staging-") for n in left) and flows.MARKER not in left

    monkeypatch.setattr(staging, "stage_release", original)
    again = dg.materialize(assets, partition_key=release, resources=resources, instance=instance)
    assert again.success
    assert flows.check_release(env, res, release) > 10
    counts = flows.check_outputs(
        env, [f"hbcd/release_ready_sessions/{release}", f"hbcd/release_staging/{release}"]
    )
    assert (counts.outputs, counts.current_records) == (2, 2)
