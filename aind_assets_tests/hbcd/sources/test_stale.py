"""Dagster's own stale status for the HBCD flow, on the real S3 server: the identified sessions
are observed, de-identified and processed; a source file changes; after the next observation
the de-identified session is Unsynced (read through GraphQL, as the UI reads it), and once it
is re-made from the new data its derivative is Unsynced in turn."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_graphql.test.utils import define_out_of_process_workspace, execute_dagster_graphql

from aind_assets.hbcd.deid.sensors import hbcd_session_discovery
from aind_assets.hbcd.keys import (
    DEIDENTIFIED_SESSION,
    IDENTIFIED_SESSION,
    SESSION_DERIVATIVES,
)
from aind_assets.hbcd.processing.sensors import hbcd_derivatives_sensor
from aind_assets.hbcd.sources.assets import hbcd_identified_observer
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets_tests.hbcd.flow_support import World, identifier_hits, make_world

STALE_QUERY = """
query Stale($key: AssetKeyInput!, $partition: String) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      staleStatus(partition: $partition)
      staleCauses(partition: $partition) { key { path } partitionKey category reason }
    }
  }
}
"""

#: The code location the GraphQL context serves: the HBCD assets only (resources are not
#: needed to read status, so a placeholder stands in for them).
LOCATION = textwrap.dedent(
    """
    import dagster as dg
    from aind_assets.hbcd.definitions import ASSETS, CHECKS

    defs = dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        resources={"hbcd": dg.ResourceDefinition.none_resource()},
    )
    """
)


@contextmanager
def graphql(instance: dg.DagsterInstance, tmp: Path) -> Iterator[Any]:
    location = tmp / "hbcd_location.py"
    location.write_text(LOCATION)
    with define_out_of_process_workspace(str(location), "defs", instance) as workspace:
        yield workspace


def stale(workspace: Any, key: dg.AssetKey, partition: str) -> tuple[str, list[dict]]:
    """Status and causes as the UI would show them now (a new request context per query, as
    each UI request has: the context caches what it resolved)."""
    result = execute_dagster_graphql(
        workspace.create_request_context(),
        STALE_QUERY,
        {"key": {"path": key.path}, "partition": partition},
    )
    assert not result.errors, result.errors
    node = result.data["assetNodeOrError"]
    return node["staleStatus"], node["staleCauses"]


def _move(w: World, src: str, dst: str) -> str:
    """Move every object under ``src`` to ``dst`` (same relative names); returns ``dst``."""
    infos = w.store.list_objects(src)
    assert infos
    for info in infos:
        w.store.copy(info.url, dst + info.url[len(src) :])
    w.store.delete([i.url for i in infos])
    return dst


def _deidentify_and_process(w: World) -> list[str]:
    tick = w.tick(hbcd_session_discovery)
    results = w.run_all(tick.run_requests)
    assert all(r.success for r in results)
    keys = sorted(k for r in tick.run_requests for k in w.sessions_of(r))
    tick = w.tick(hbcd_derivatives_sensor)
    assert all(r.success for r in w.run_all(tick.run_requests))
    return keys


def test_changed_source_makes_session_and_derivative_unsynced(
    s3_store: ObjectStoreResource, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with (
        dg.instance_for_test(temp_dir=str(home)) as instance,
        graphql(instance, tmp_path) as ctx,
    ):
        w = make_world(s3_store, None, instance, tmp_path, n_subjects=2, sessions=("V02", "V03"))
        # one session arrives later (kept aside, put back below)
        late = w.idmap.rows[1]
        aside = _move(w, w.source_url(f"sub-{late.dccid}/ses-V03"), w.store.url("aside"))
        w.tick(hbcd_session_discovery)  # registers the partitions (runs not executed yet)
        first = w.tick(hbcd_identified_observer)
        versions = {e.partition: e.tags["dagster/data_version"] for e in first.asset_events}
        keys = sorted(versions)
        assert len(keys) == 3 and len(set(versions.values())) == 3
        assert w.tick(hbcd_identified_observer).asset_events == []  # nothing changed

        w.cursors.pop(hbcd_session_discovery.name)  # request the runs again and execute them
        assert _deidentify_and_process(w) == keys
        for key in keys:
            assert stale(ctx, DEIDENTIFIED_SESSION, key) == ("FRESH", [])
            assert stale(ctx, SESSION_DERIVATIVES, key) == ("FRESH", [])

        # --- one identified file is rewritten ----------------------------------------------
        row0 = next(r for r in w.idmap.rows if f"sub-{r.rc_id}_ses-V02" == keys[0])
        scans = w.source_url(f"sub-{row0.dccid}/ses-V02/sub-{row0.dccid}_ses-V02_scans.tsv")
        w.store.put_bytes(scans, w.store.get_bytes(scans) + b"\n")
        tick = w.tick(hbcd_identified_observer)
        assert [e.partition for e in tick.asset_events] == [keys[0]]
        assert tick.asset_events[0].tags["dagster/data_version"] != versions[keys[0]]

        status, causes = stale(ctx, DEIDENTIFIED_SESSION, keys[0])
        assert status == "STALE"
        # the root cause, as the UI lists it: the identified session's new data version
        assert causes == [
            {
                "key": {"path": IDENTIFIED_SESSION.path},
                "partitionKey": keys[0],
                "category": "DATA",
                "reason": "has a new data version",
            }
        ]
        assert stale(ctx, DEIDENTIFIED_SESSION, keys[1]) == ("FRESH", [])
        # Dagster's stale status looks one step up: the derivative turns once its input is re-made
        assert stale(ctx, SESSION_DERIVATIVES, keys[0]) == ("FRESH", [])

        # --- the session is de-identified again from the new data ---------------------------
        tick = w.tick(hbcd_session_discovery)
        assert [w.sessions_of(r) for r in tick.run_requests] == [[keys[0]]]
        assert all(r.success for r in w.run_all(tick.run_requests))
        assert stale(ctx, DEIDENTIFIED_SESSION, keys[0]) == ("FRESH", [])
        status, causes = stale(ctx, SESSION_DERIVATIVES, keys[0])
        assert status == "STALE"
        assert [(c["key"]["path"], c["partitionKey"], c["reason"]) for c in causes] == [
            (DEIDENTIFIED_SESSION.path, keys[0], "has a new data version")
        ]
        assert stale(ctx, SESSION_DERIVATIVES, keys[1]) == ("FRESH", [])

        # the processing that follows brings it back in sync
        tick = w.tick(hbcd_derivatives_sensor)
        assert [r.partition_key for r in tick.run_requests] == [keys[0]]
        assert all(r.success for r in w.run_all(tick.run_requests))
        assert stale(ctx, SESSION_DERIVATIVES, keys[0]) == ("FRESH", [])

        # --- a new session de-identified before the observer first sees it -----------------
        _move(w, aside, w.source_url(f"sub-{late.dccid}/ses-V03"))
        tick = w.tick(hbcd_session_discovery)
        new_key = f"sub-{late.rc_id}_ses-V03"
        assert [w.sessions_of(r) for r in tick.run_requests] == [[new_key]]
        assert all(r.success for r in w.run_all(tick.run_requests))
        # its files are those it was de-identified from (the ledger says so): no observation,
        # which Dagster would take for a change; it stays in sync
        assert w.tick(hbcd_identified_observer).asset_events == []
        assert stale(ctx, DEIDENTIFIED_SESSION, new_key) == ("FRESH", [])
        # and a change to it afterwards is seen as usual
        scans = w.source_url(f"sub-{late.dccid}/ses-V03/sub-{late.dccid}_ses-V03_scans.tsv")
        w.store.put_bytes(scans, w.store.get_bytes(scans) + b"\n")
        assert [e.partition for e in w.tick(hbcd_identified_observer).asset_events] == [new_key]
        assert stale(ctx, DEIDENTIFIED_SESSION, new_key)[0] == "STALE"

        # nothing identifying in what the observer reported or kept
        for text in [*w.cursors.values(), *w.messages]:
            assert identifier_hits(text or "", w.idmap, "observer") == []


def test_the_first_sessions_ever_de_identified_turn_unsynced_too(
    s3_store: ObjectStoreResource, tmp_path: Path
) -> None:
    """On a new instance discovery requests the first sessions before the observer ever ran:
    its own tick observes the sessions it requests, so their runs record a source version and
    a later change shows (without it Dagster saw no version and called them fresh forever)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with (
        dg.instance_for_test(temp_dir=str(home)) as instance,
        graphql(instance, tmp_path) as ctx,
    ):
        w = make_world(s3_store, None, instance, tmp_path, n_subjects=1, sessions=("V02",))
        tick = w.tick(hbcd_session_discovery)
        keys = [k for r in tick.run_requests for k in w.sessions_of(r)]
        observed = {e.partition: e.tags["dagster/data_version"] for e in tick.asset_events}
        assert keys and sorted(observed) == sorted(keys)
        assert all(r.success for r in w.run_all(tick.run_requests))
        # the observer agrees with what discovery observed: nothing new to report
        first = w.tick(hbcd_identified_observer)
        assert all(
            observed[e.partition] == e.tags["dagster/data_version"] for e in first.asset_events
        )
        assert stale(ctx, DEIDENTIFIED_SESSION, keys[0]) == ("FRESH", [])

        row = w.idmap.rows[0]
        scans = w.source_url(f"sub-{row.dccid}/ses-V02/sub-{row.dccid}_ses-V02_scans.tsv")
        w.store.put_bytes(scans, w.store.get_bytes(scans) + b"\n")
        assert [e.partition for e in w.tick(hbcd_identified_observer).asset_events] == keys[:1]
        assert stale(ctx, DEIDENTIFIED_SESSION, keys[0])[0] == "STALE"
        for text in [*w.cursors.values(), *w.messages]:
            assert identifier_hits(text or "", w.idmap, "discovery") == []
