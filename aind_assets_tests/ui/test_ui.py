"""The analysis flow as a user sees it: `aind-assets dev` on the embedded defaults, in Chromium.

Registers the demo partitions with the CLI, materializes an analysis partition through the
GraphQL client, then drives headless Chromium through the asset graph, each asset's partitions
page, and the materialization (links, record table, plot). Fixtures and where screenshots go:
``conftest.py`` (``$AIND_TEST_ARTIFACTS/ui/``). Run it alone with ``scripts/test -m ui``.
"""

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from dagster_graphql import DagsterGraphQLClient
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from aind_assets_tests.ui.conftest import (
    Platform,
    location_name,
    open_page,
    queue_wait,
    wait_for_run,
)

pytestmark = [pytest.mark.ui, pytest.mark.servers]

SPEC, GROUPED = "ephys_units", "foraging_by_subject"


@pytest.fixture(scope="module")
def materialized(platform: Platform) -> dict[str, list[str] | str]:
    """Register the demo partitions and materialize one through the GraphQL API."""
    sync = json.loads(platform.cli("partitions", "sync", "--json"))
    keys = json.loads(platform.cli("partitions", "list", "--json"))
    assert keys[SPEC] and keys[GROUPED], sync
    key = next(k for k in keys[SPEC] if k.startswith("ecephys_"))
    client = DagsterGraphQLClient("127.0.0.1", port_number=platform.port)
    run_id = client.submit_job_execution(
        f"analysis_{SPEC}",
        tags={"dagster/partition": key},
        asset_selection=[["analysis", SPEC, "dispatch"], ["analysis", SPEC, "unit_quality"]],
    )
    wait_for_run(platform, run_id)
    waited, hbcd_runs = queue_wait(platform, run_id)
    # people's runs go first (priority above sensors', per-flow limits): no wait behind a backlog
    assert waited <= 30, f"run {run_id} waited {waited:.1f} s in the queue ({hbcd_runs} HBCD runs)"
    return {"partition": key, "run_id": run_id, SPEC: keys[SPEC], GROUPED: keys[GROUPED]}


def test_asset_graph_shows_both_flows(
    platform: Platform, browser: webdriver.Chrome, artifacts: Path
) -> None:
    open_page(
        browser,
        f"{platform.url}/asset-groups",
        ["aind_analysis", "hbcd", "hbcd_release"],
        artifacts / "asset-graph.png",
    )
    group = f"{platform.url}/locations/{location_name(platform)}/asset-groups"
    analysis = open_page(
        browser,
        f"{group}/aind_analysis/lineage",
        ["dispatch", "unit_quality", "behavior_performance", "data_assets"],
        artifacts / "asset-graph-analysis.png",
    )
    hbcd = open_page(
        browser,
        f"{group}/hbcd/lineage",
        ["deidentified_session", "session_derivatives", "reidentified_derivatives"],
        artifacts / "asset-graph-hbcd.png",
    )
    # each group's lineage shows its own flow, not the other one
    assert "deidentified_session" not in analysis, analysis
    assert "unit_quality" not in hbcd, hbcd


def test_each_asset_lists_only_its_own_partitions(
    platform: Platform,
    materialized: dict,
    browser: webdriver.Chrome,
    artifacts: Path,
) -> None:
    sessions, subjects = materialized[SPEC], materialized[GROUPED]
    # the session spec's analysis: its sessions only, one of them materialized
    text = open_page(
        browser,
        f"{platform.url}/assets/analysis/{SPEC}/unit_quality?view=partitions",
        [f"{len(sessions)} Partitions Selected", "Materialized (1)"],
        artifacts / "partitions-unit-quality.png",
    )
    key = materialized["partition"]
    assert key[:12] in text and key[-8:] in text  # long keys: an ellipsis in the middle
    assert not any(f"\n{s}\n" in f"\n{text}\n" for s in subjects), "a subject key on sessions"
    # the subject spec's analysis: subject keys (readable: the subject id), no session
    grouped = open_page(
        browser,
        f"{platform.url}/assets/analysis/{GROUPED}/behavior_performance?view=partitions",
        [f"{len(subjects)} Partitions Selected", *subjects],
        artifacts / "partitions-behavior-by-subject.png",
    )
    assert "ecephys_" not in grouped and "behavior_7" not in grouped, grouped


def test_materialization_has_links_a_record_table_and_a_plot(
    platform: Platform,
    materialized: dict,
    browser: webdriver.Chrome,
    artifacts: Path,
) -> None:
    key = materialized["partition"]
    text = open_page(
        browser,
        f"{platform.url}/assets/analysis/{SPEC}/unit_quality?view=events&partition={key}",
        ["processing_record", "results_link_1", "job_records"],
        artifacts / "materialization.png",
    )
    assert "processing.json" in text
    # outputs are links (<a href>) that resolve: on the local store, file:// URLs of files
    links = {a.get_attribute("href") or "" for a in browser.find_elements(By.TAG_NAME, "a")}
    record = next(h for h in links if h.endswith("/processing.json"))
    results = [h for h in links if "/analysis-results/" in h]
    assert record.startswith("file://") and results, links
    assert Path(unquote(urlparse(record).path)).is_file(), record
    assert all(Path(unquote(urlparse(h).path)).exists() for h in results), results
    # the plot: inline when the store gives the browser an http URL (S3), else the PNG opens
    # from its row ("[Show Markdown]": Dagster shows markdown inline below 1,000 characters)
    row = browser.find_element(By.XPATH, "//td[normalize-space()='plot']/..")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", row)
    shown = row.find_elements(By.TAG_NAME, "img")
    if not shown:
        row.find_element(By.XPATH, ".//a[contains(., 'Show Markdown')]").click()
    WebDriverWait(browser, 30).until(
        lambda d: any(
            int(img.get_attribute("naturalWidth") or 0) > 100
            for img in d.find_elements(By.TAG_NAME, "img")
            if "png" in (img.get_attribute("src") or "")
        ),
        message="the plot is not shown in the materialization metadata",
    )
    browser.save_screenshot(str(artifacts / "materialization-plot.png"))
    (artifacts / "materialization.html").write_text(browser.page_source)
    assert f"unit_quality · {key}" in browser.find_element(By.TAG_NAME, "body").text
