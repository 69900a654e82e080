"""IO-manager outputs under faults: the S3 or Mongo-wire server SIGKILLed between the steps of
the commit protocol, or the run process itself killed; then the server restarted, a downstream
run, a re-run, and the count of outputs, ``processing.json`` files and records."""

from __future__ import annotations

import json
import signal

import pytest

from aind_assets.io_managers.commit import load_committed, read_pointer
from aind_assets_tests.faults import flows
from aind_assets_tests.faults.conftest import FaultServers, run_killed
from aind_assets_tests.faults.flows import Env

#: (what dies, after which protocol step): value_written -> version_written (processing.json)
#: -> record_pending (DocDB) -> records_final (DocDB, under the commit lease) -> committed.
CASES = [
    ("s3", "value_written"),  # processing.json cannot be written
    ("mongo", "version_written"),  # the pending record cannot be written
    ("mongo", "record_pending"),  # the commit lease / final records cannot be written
    ("s3", "records_final"),  # DocDB is final, the pointer cannot be written
    ("run", "version_written"),  # the run dies with a whole version and no record
    ("run", "record_pending"),  # the run dies with a pending record
    ("run", "records_final"),  # the run dies holding the commit lease, pointer unwritten
]


def _source_version(env: Env) -> str:
    pointer = read_pointer(env.store.upath(f"{env.root}/source_value/{flows.PARTITION}"))
    assert pointer is not None
    return str(pointer["version"])


@pytest.mark.parametrize(("dies", "step"), CASES, ids=[f"{d}-at-{s}" for d, s in CASES])
def test_a_killed_server_or_run_leaves_nothing_half_done(
    fault_servers: FaultServers, env: Env, dies: str, step: str
) -> None:
    assert flows.materialize(env, [flows.source_value, flows.derived]).success
    before = _source_version(env)

    if dies == "run":
        assert run_killed("io", step, fault_servers, env) == -signal.SIGKILL
    else:
        server = fault_servers.server(dies)
        fired: list[str] = []

        def kill(at: str) -> None:
            if at == step and not fired:
                fired.append(at)
                server.kill()

        result = flows.materialize(env, [flows.source_value], checkpoint=kill)
        assert fired and not result.success
        text = flows.failure_text(result)
        # the error names what was unreachable
        if dies == "s3":
            assert f"127.0.0.1:{server.port}" in text and "endpoint" in text.lower()
        else:
            assert f"DocDB at 127.0.0.1:{server.port}" in text
        fault_servers.restart(dies, env)

    # the half-written version is never loaded: a downstream run reads the previous output
    assert _source_version(env) == before
    assert flows.materialize(env, [flows.source_value.to_source_asset(), flows.derived]).success
    derived = env.docdb.find_one(flows.RECORDS, {"asset_key": "derived", "status": "current"})
    assert derived is not None
    inputs = derived["processing"]["data_processes"][0]["code"]["input_data"]
    assert [i["url"] for i in inputs] == [
        f"{env.root}/source_value/{flows.PARTITION}/versions/{before}"
    ]

    # the re-run repairs: one whole, current output each, nothing orphaned or duplicated
    assert flows.materialize(env, [flows.source_value, flows.derived]).success
    assert _source_version(env) != before
    counts = flows.check_outputs(env)
    assert (counts.outputs, counts.pointers, counts.current_records) == (2, 2, 2)
    assert counts.versions == counts.processing_files <= 4
    # derived read the same source version twice (one record, replaced), then a new one
    assert counts.superseded_records == 1


def test_readers_retry_when_a_concurrent_writer_collects_their_version(env: Env) -> None:
    """A reader that read the pointer just before two more commits still loads a whole value."""
    assert flows.materialize(env, [flows.source_value]).success
    part = env.store.upath(f"{env.root}/source_value/{flows.PARTITION}")
    stale = read_pointer(part)
    for _ in range(2):  # the version `stale` names is collected
        assert flows.materialize(env, [flows.source_value]).success
    assert stale is not None and not env.store.list_objects(
        f"{env.root}/source_value/{flows.PARTITION}/versions/{stale['version']}"
    )
    calls: list[str] = []

    def load(folder):  # noqa: ANN001, ANN202
        calls.append(folder.name)
        if len(calls) == 1:  # as if the pointer had been read before the two commits
            folder = folder.parent / stale["version"]
        with (folder / "value.json").open("rb") as f:
            return json.loads(f.read())

    value, _ = load_committed(part, load)
    assert value["partition"] == flows.PARTITION and len(calls) == 2
