"""The platform as a user sees it: `aind-assets dev` on the embedded defaults, in Chromium.

Starts the run command's platform (embedded DocDB, demo data, `dagster dev`) in a temporary
data dir, registers the demo partitions with the CLI, materializes an analysis through the
GraphQL client, then drives headless Chromium through the asset graph, the partitions page and
the materialization. Screenshots are kept under ``test-artifacts/ui/`` (or
``$AIND_TEST_ARTIFACTS``). Run it alone with ``scripts/test -m ui``.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from aind_assets.servers import ManagedServer, free_port
from aind_assets_tests.support import missing_tool

pytestmark = [pytest.mark.ui, pytest.mark.servers]

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = Path(os.environ.get("AIND_TEST_ARTIFACTS", PROJECT / "test-artifacts")) / "ui"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    """Chromium and chromedriver are there (checked before the platform starts)."""
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not tool.exists():
            missing_tool(f"{tool} not found (Debian's chromium and chromium-driver)")


class Platform:
    def __init__(self, port: int, env: dict[str, str]) -> None:
        self.port, self.env = port, env
        self.url = f"http://127.0.0.1:{port}"

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [str(BIN / "aind-assets"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data = tmp_path_factory.mktemp("platform")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIND_", "HBCD_", "AWS_", "DAGSTER_"))
    }
    env |= {
        "AIND_DATA_DIR": str(data / "data"),
        "AIND_EMBEDDED_DOCDB_PORT": str(free_port()),
        "DAGSTER_HOME": str(data / "dagster_home"),
    }
    server = ManagedServer(
        "aind-assets dev",
        [str(BIN / "aind-assets"), "dev", "--port", str(port)],
        port,
        data / "dev.log",
        env=env,
        stop_timeout=60,  # it stops dagster dev and the embedded DocDB before exiting
    )
    server.ready = lambda: _answers(f"http://127.0.0.1:{port}/server_info")  # type: ignore[method-assign]
    try:
        with server.start(timeout=240):
            yield Platform(port, env)
    finally:
        _kill_leftovers(str(data))


def _kill_leftovers(marker: str) -> None:
    """Whatever still runs with this test's data dir or home in its environment or command line."""
    import psutil

    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + str(proc.info["environ"] or {})
            if marker in text and proc.pid != os.getpid():
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def _run_errors(platform: Platform, run_id: str) -> str:
    """The failure events of a run, with their stack traces, so a red CI run says why."""
    from dagster import DagsterEventType, DagsterInstance

    failures = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
    with DagsterInstance.from_config(platform.env["DAGSTER_HOME"]) as instance:
        lines = []
        for record in instance.all_logs(run_id, of_type=failures):
            event = record.dagster_event
            error = getattr(event.event_specific_data, "error", None) if event else None
            lines.append(f"{record.step_key or 'run'}: {record.user_message}")
            if error is not None:
                lines.append(error.to_string())
    return "\n".join(lines) or "(no failure events recorded)"


def _queue_wait(platform: Platform, run_id: str) -> tuple[float, int]:
    """Seconds the run waited in the queue (created -> dequeued and handed to the launcher; the
    launch itself, a new process, is the machine's speed, not the queue's), and how many HBCD
    runs the sensors had requested by then (the backlog it did not wait behind)."""
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    with DagsterInstance.from_config(platform.env["DAGSTER_HOME"]) as instance:
        record = instance.get_run_record_by_id(run_id)
        assert record is not None
        starting = instance.all_logs(run_id, of_type=DagsterEventType.RUN_STARTING)
        assert starting, f"run {run_id} has no RUN_STARTING event"
        hbcd = instance.get_runs_count(
            RunsFilter(tags={"aind/flow": "hbcd"}, created_before=record.create_timestamp)
        )
        return starting[0].timestamp - record.create_timestamp.timestamp(), hbcd


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def materialized(platform: Platform) -> dict[str, str]:
    """Register the demo partitions and materialize one through the GraphQL API."""
    sync = json.loads(platform.cli("partitions", "sync", "--json"))
    keys = platform.cli("partitions", "list").split()
    assert keys, sync
    key = next(k for k in keys if k.startswith("ecephys_"))
    client = DagsterGraphQLClient("127.0.0.1", port_number=platform.port)
    run_id = client.submit_job_execution(
        "aind_analysis",
        tags={"dagster/partition": key},
        asset_selection=[["analysis_dispatch"], ["analysis", "unit_quality"]],
    )
    deadline = time.monotonic() + 300
    status = client.get_run_status(run_id)
    while status not in (
        DagsterRunStatus.SUCCESS,
        DagsterRunStatus.FAILURE,
        DagsterRunStatus.CANCELED,
    ):
        assert time.monotonic() < deadline, f"run {run_id} still {status}"
        time.sleep(1)
        status = client.get_run_status(run_id)
    assert status == DagsterRunStatus.SUCCESS, (
        f"run {run_id} ended {status}:\n{_run_errors(platform, run_id)}"
    )
    waited, hbcd_runs = _queue_wait(platform, run_id)
    # people's runs go first (priority above sensors', per-flow limits): no wait behind a backlog
    assert waited <= 30, f"run {run_id} waited {waited:.1f} s in the queue ({hbcd_runs} HBCD runs)"
    return {"partition": key, "run_id": run_id, "keys": " ".join(keys)}


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = ARTIFACTS.parent / "chromium-profile"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1600,1000",
        f"--user-data-dir={profile}-{os.getpid()}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver: webdriver.Chrome, url: str, wait_for_text: list[str], shot: str) -> str:
    driver.get(url)
    _skip_welcome(driver)
    try:
        WebDriverWait(driver, 60).until(
            lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in wait_for_text),
            message=f"{url} did not show all of {wait_for_text} within 60 s",
        )
    finally:
        driver.save_screenshot(str(ARTIFACTS / f"{shot}.png"))
    return driver.find_element(By.TAG_NAME, "body").text


def _skip_welcome(driver: webdriver.Chrome) -> None:
    """Close the first-visit 'Join the Dagster community' dialog if it shows."""
    time.sleep(1)
    for text in ("Skip", "Dismiss"):
        try:
            driver.find_element(By.XPATH, f"//button[normalize-space()='{text}']").click()
        except (NoSuchElementException, WebDriverException):
            continue


def test_asset_graph_shows_both_flows(platform: Platform, browser: webdriver.Chrome) -> None:
    _open(
        browser,
        f"{platform.url}/asset-groups",
        ["aind_analysis", "hbcd", "hbcd_release"],
        "asset-graph",
    )
    group = f"{platform.url}/locations/__repository__@aind_assets.definitions/asset-groups"
    analysis = _open(
        browser,
        f"{group}/aind_analysis/lineage",
        ["analysis_dispatch", "unit_quality", "behavior_performance"],
        "asset-graph-analysis",
    )
    hbcd = _open(
        browser,
        f"{group}/hbcd/lineage",
        ["deidentified_session", "session_derivatives", "reidentified_derivatives"],
        "asset-graph-hbcd",
    )
    # each group's lineage shows its own flow, not the other one
    assert "deidentified_session" not in analysis, analysis
    assert "analysis_dispatch" not in hbcd and "unit_quality" not in hbcd, hbcd


def test_partitions_page_lists_demo_partitions(
    platform: Platform, materialized: dict[str, str], browser: webdriver.Chrome
) -> None:
    count = len(materialized["keys"].split())
    text = _open(
        browser,
        f"{platform.url}/assets/analysis_dispatch?view=partitions",
        [f"{count} Partitions Selected", "Materialized (1)"],
        "partitions",
    )
    # the list shows every demo partition (long keys are shortened with an ellipsis in the middle)
    key = materialized["partition"]
    assert key[:12] in text and key[-8:] in text


def test_materialization_shows_record_link_and_plot(
    platform: Platform, materialized: dict[str, str], browser: webdriver.Chrome
) -> None:
    key = materialized["partition"]
    text = _open(
        browser,
        f"{platform.url}/assets/analysis/unit_quality?view=events&partition={key}",
        ["processing_record"],
        "materialization",
    )
    assert "processing.json" in text
    # the plot row is below the fold; its markdown (with the PNG inline) opens from the row
    row = browser.find_element(By.XPATH, "//td[normalize-space()='plot']/..")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", row)
    row.find_element(By.XPATH, ".//a[contains(., 'Show Markdown')]").click()
    WebDriverWait(browser, 30).until(
        lambda d: any(
            (img.get_attribute("src") or "").startswith("data:image/png")
            for img in d.find_elements(By.TAG_NAME, "img")
        )
    )
    browser.save_screenshot(str(ARTIFACTS / "materialization-plot.png"))
    (ARTIFACTS / "materialization.html").write_text(browser.page_source)
    images = [
        img
        for img in browser.find_elements(By.TAG_NAME, "img")
        if (img.get_attribute("src") or "").startswith("data:image/png")
    ]
    assert images, "the plot is not shown in the materialization metadata"
    assert int(images[0].get_attribute("naturalWidth") or 0) > 100
