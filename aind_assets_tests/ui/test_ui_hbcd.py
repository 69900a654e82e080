"""The HBCD flow as a user sees it in Chromium, on the platform ``aind-assets dev`` runs (shared
with ``test_ui.py``; fixtures in ``conftest.py``, screenshots in ``$AIND_TEST_ARTIFACTS/ui/``).

The platform de-identifies the demo sessions by itself (``hbcd_session_discovery`` at start).
Then: one identified file of a de-identified session is rewritten on the platform's store, the
observer (``hbcd_identified_observer``, every 5 s here) reports its new data version and the
session's partition page shows the "Unsynced" badge; and a person launches a session's
de-identification from the asset's "Materialize…" dialog and sees it materialized.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dagster import AssetKey
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from aind_assets.hbcd.definitions import hbcd_resources
from aind_assets.hbcd.identity.replace import identified_session_prefix
from aind_assets.hbcd.keys import DEIDENTIFIED_SESSION, IDENTIFIED_SESSION
from aind_assets.hbcd.resources import HbcdResource
from aind_assets.resources.urls import join_url
from aind_assets.settings import Settings
from aind_assets_tests.ui.conftest import (
    Platform,
    graphql,
    location_name,
    open_page,
    wait_for_run,
    wait_until,
)

pytestmark = [pytest.mark.ui, pytest.mark.servers]

DISCOVERY = "hbcd_session_discovery"
#: The page of one de-identified session (the partition's detail beside the partition list).
PAGE = "/assets/hbcd/deidentified_session?view=partitions&partition={}"

STATUSES = """
query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions } } } } }
"""
STALE = """
query($key: AssetKeyInput!, $partition: String) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode { staleStatus(partition: $partition)
    staleCauses(partition: $partition) { key { path } partitionKey reason } } } }
"""
MATERIALIZATIONS = """
query($key: AssetKeyInput!, $partition: String!) { assetOrError(assetKey: $key) {
  ... on Asset { assetMaterializations(partitions: [$partition]) { runId } } } }
"""
UI_RUNS = """
query($partition: String!) { runsOrError(filter: {tags: [
  {key: "dagster/partition", value: $partition}, {key: "dagster/from_ui", value: "true"}]}) {
  ... on Runs { results { runId tags { key value } } } } }
"""
SENSOR = """
query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
  ... on Sensor { sensorState { id selectorId status } } } }
"""
STOP_SENSOR = """
mutation($origin: String, $selector: String) { stopSensor(jobOriginId: $origin,
  jobSelectorId: $selector) { ... on StopSensorMutationResult { instigationState { status } } } }
"""
START_SENSOR = """
mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
  ... on Sensor { sensorState { status } } } }
"""


def _key(asset: AssetKey) -> dict:
    return {"path": list(asset.path)}


def deidentified_sessions(platform: Platform) -> list[str]:
    data = graphql(platform, STATUSES, {"key": _key(DEIDENTIFIED_SESSION)})
    statuses = data["assetNodeOrError"]["assetPartitionStatuses"]
    return sorted(statuses["materializedPartitions"])


def stale_status(platform: Platform, partition: str) -> tuple[str, list[dict]]:
    """The session's stale status and causes, as the UI reads them."""
    data = graphql(platform, STALE, {"key": _key(DEIDENTIFIED_SESSION), "partition": partition})
    node = data["assetNodeOrError"]
    return node["staleStatus"], node["staleCauses"]


OBSERVATIONS = """
query($key: AssetKeyInput!, $partition: String!) { assetOrError(assetKey: $key) {
  ... on Asset { assetObservations(partitions: [$partition], limit: 1) { runId } } } }
"""


def observed(platform: Platform, partition: str) -> bool:
    """The observer has reported a data version of this identified session."""
    data = graphql(
        platform, OBSERVATIONS, {"key": _key(IDENTIFIED_SESSION), "partition": partition}
    )
    return bool(data["assetOrError"]["assetObservations"])


def materialization_runs(platform: Platform, partition: str) -> list[str]:
    data = graphql(
        platform, MATERIALIZATIONS, {"key": _key(DEIDENTIFIED_SESSION), "partition": partition}
    )
    return [m["runId"] for m in data["assetOrError"]["assetMaterializations"]]


@contextmanager
def sensor_paused(platform: Platform, name: str) -> Iterator[None]:
    """Turn a sensor off (as its toggle in the UI does) and on again afterwards."""
    selector = {
        "repositoryLocationName": location_name(platform),
        "repositoryName": "__repository__",
        "sensorName": name,
    }
    state = graphql(platform, SENSOR, {"s": selector})["sensorOrError"]["sensorState"]
    assert state["status"] == "RUNNING", state
    stopped = graphql(
        platform, STOP_SENSOR, {"origin": state["id"], "selector": state["selectorId"]}
    )
    assert stopped["stopSensor"]["instigationState"]["status"] == "STOPPED", stopped
    try:
        yield
    finally:
        started = graphql(platform, START_SENSOR, {"s": selector})
        assert started["startSensor"]["sensorState"]["status"] == "RUNNING", started


def rewrite_identified_file(platform: Platform, partition: str) -> str:
    """Rewrite one identified file of the session on the platform's store (the scans table,
    one more line): what a re-delivery of the session does. Returns the file's name."""
    settings = Settings.from_env(platform.env)
    store = settings.object_store()
    hbcd = hbcd_resources(settings, store)["hbcd"]
    assert isinstance(hbcd, HbcdResource)
    folder = join_url(
        hbcd.layout.identified_bids, identified_session_prefix(partition, hbcd.idmap())
    )
    scans = [i.url for i in store.list_objects(folder) if i.url.endswith("_scans.tsv")]
    assert len(scans) == 1, f"{partition}: {len(scans)} scans tables"
    store.put_bytes(scans[0], store.get_bytes(scans[0]) + b"\n")
    return scans[0].rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def sessions(platform: Platform) -> list[str]:
    """The sessions the platform de-identified by itself after it started (at least two)."""
    found: list[str] = []

    def enough() -> bool:
        found[:] = deidentified_sessions(platform)
        return len(found) >= 2

    wait_until(enough, 600, "two de-identified sessions on the demo data")
    return found


def test_changed_source_shows_session_unsynced(
    platform: Platform, sessions: list[str], browser: webdriver.Chrome, artifacts: Path
) -> None:
    key = sessions[0]
    # discovery would de-identify the changed session again on its next tick; paused, the
    # stale state stays until the page is seen
    with sensor_paused(platform, DISCOVERY):
        # one of the start-up batch: discovery observed it when it requested it, so its run
        # recorded the source version it read
        wait_until(lambda: observed(platform, key), 120, f"{key} observed")
        wait_until(lambda: stale_status(platform, key)[0] == "FRESH", 120, f"{key} in sync")
        before = open_page(
            browser,
            platform.url + PAGE.format(key),
            [key, "Latest materialization"],
            artifacts / "hbcd-session-in-sync.png",
        )
        assert "Unsynced" not in before, before

        rewrite_identified_file(platform, key)
        # the observer ticks every 5 s; a loaded machine may delay the daemon much longer
        wait_until(lambda: stale_status(platform, key)[0] == "STALE", 300, f"{key} stale")
        status, causes = stale_status(platform, key)
        assert causes == [
            {
                "key": {"path": list(IDENTIFIED_SESSION.path)},
                "partitionKey": key,
                "reason": "has a new data version",
            }
        ], causes
        after = open_page(
            browser,
            platform.url + PAGE.format(key),
            [key, "Unsynced"],
            artifacts / "hbcd-session-unsynced.png",
        )
        # the badge sits in the partition's header, beside its name and "Materialized"
        header = after.split("Latest materialization", 1)[0].rsplit(key, 1)[-1]
        assert "Materialized" in header and "Unsynced" in header, header
        badge = browser.find_element(By.XPATH, "//*[starts-with(normalize-space(), 'Unsynced')]")
        assert badge.is_displayed()
        # the other sessions were not touched
        assert stale_status(platform, sessions[1])[0] == "FRESH"


def test_materialize_a_session_from_the_ui(
    platform: Platform, sessions: list[str], browser: webdriver.Chrome, artifacts: Path
) -> None:
    key = sessions[-1]
    before = materialization_runs(platform, key)
    open_page(
        browser,
        platform.url + PAGE.format(key),
        [key, "Latest materialization", "Materialize"],
        artifacts / "hbcd-session-before-launch.png",
    )
    browser.find_element(By.XPATH, "//button[contains(normalize-space(), 'Materialize')]").click()
    # opened from the partition's page, the dialog has that partition selected
    launch = WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.XPATH, "//button[normalize-space()='Launch 1 run']"),
        message="the Materialize dialog did not offer 'Launch 1 run'",
    )
    dialog = browser.find_element(By.CSS_SELECTOR, "[role=dialog]").text
    browser.save_screenshot(str(artifacts / "hbcd-materialize-dialog.png"))
    assert "deidentified_session" in dialog and "1 partition" in dialog, dialog
    launch.click()
    WebDriverWait(browser, 60).until(
        lambda d: "Launched run" in d.find_element(By.TAG_NAME, "body").text,
        message="no 'Launched run' notice after the launch",
    )
    body = browser.find_element(By.TAG_NAME, "body").text
    short = body.split("Launched run", 1)[1].split()[0]
    runs = graphql(platform, UI_RUNS, {"partition": key})["runsOrError"]["results"]
    (run,) = [r for r in runs if r["runId"].startswith(short)]
    wait_for_run(platform, run["runId"])

    # a person's run: launched from the UI, not by a sensor or a schedule
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags.get("dagster/from_ui") == "true" and tags.get("dagster/partition") == key, tags
    assert not {"dagster/sensor_name", "dagster/schedule_name"} & set(tags), tags
    after = materialization_runs(platform, key)
    assert run["runId"] in after and set(before) < set(after), (before, after)
    text = open_page(
        browser,
        platform.url + PAGE.format(key),
        [key, "Latest materialization", run["runId"][:8]],
        artifacts / "hbcd-session-materialized-from-ui.png",
    )
    header = text.split("Latest materialization", 1)[0].rsplit(key, 1)[-1]
    assert "Materialized" in header and "Unsynced" not in header, header
