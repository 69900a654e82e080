"""Fixtures of the browser tests: the running platform (`aind-assets dev` on the embedded
defaults, in a temporary data dir), headless Chromium, and where screenshots go.

Reusable by every UI test module of this folder. The platform is session-scoped: the modules
share one start (about a minute), so each test picks its own partitions and leaves the
platform as it found it (a sensor it pauses is turned on again). The identified-session
observer ticks every 5 s here (``HBCD_OBSERVER_INTERVAL_S``; 5 min by default), so a source
change shows within seconds.
Screenshots and page sources are test artifacts, kept under ``$AIND_TEST_ARTIFACTS/ui/`` when
that is set (CI keeps the folder), else under ``test-artifacts/ui/`` in the project
(git-ignored).
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from aind_assets.servers import ManagedServer, free_port
from aind_assets_tests.support import missing_tool

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory, chromium: None) -> Iterator[Platform]:
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
        "HBCD_OBSERVER_INTERVAL_S": "5",
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


def run_errors(platform: Platform, run_id: str) -> str:
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


def queue_wait(platform: Platform, run_id: str) -> tuple[float, int]:
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


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` about once a second until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(1)


def wait_for_run(platform: Platform, run_id: str, timeout_s: float = 300) -> None:
    """Wait until the run ends; fail with its errors unless it succeeded."""
    from dagster import DagsterRunStatus
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=platform.port)
    ended = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
    deadline = time.monotonic() + timeout_s
    status = client.get_run_status(run_id)
    while status not in ended:
        assert time.monotonic() < deadline, f"run {run_id} still {status}"
        time.sleep(1)
        status = client.get_run_status(run_id)
    assert status == DagsterRunStatus.SUCCESS, (
        f"run {run_id} ended {status}:\n{run_errors(platform, run_id)}"
    )


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: ``$AIND_TEST_ARTIFACTS/ui``, else ``test-artifacts/ui`` in the
    project (git-ignored)."""
    folder = Path(os.environ.get("AIND_TEST_ARTIFACTS", PROJECT / "test-artifacts")) / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"UI test artifacts: {folder}")
    return folder


def graphql(platform: Platform, query: str, variables: dict | None = None) -> dict:
    """One GraphQL query against the platform's webserver."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{platform.url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


def location_name(platform: Platform) -> str:
    """The code location's name as the UI spells it in URLs."""
    data = graphql(
        platform, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
    )
    (entry,) = data["workspaceOrError"]["locationEntries"]
    return entry["name"]


@pytest.fixture(scope="module")
def browser(chromium: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium") / "profile"
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
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: webdriver.Chrome, url: str, wait_for_text: list[str], shot: Path) -> str:
    """Open ``url``, wait until the page shows every text, save a screenshot to ``shot``
    (also when it times out); the page's text."""
    driver.get(url)
    _skip_welcome(driver)
    try:
        WebDriverWait(driver, 60).until(
            lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in wait_for_text),
            message=f"{url} did not show all of {wait_for_text} within 60 s",
        )
    finally:
        driver.save_screenshot(str(shot))
    return driver.find_element(By.TAG_NAME, "body").text


def _skip_welcome(driver: webdriver.Chrome) -> None:
    """Close the first-visit 'Join the Dagster community' dialog if it shows."""
    time.sleep(1)
    for text in ("Skip", "Dismiss"):
        try:
            driver.find_element(By.XPATH, f"//button[normalize-space()='{text}']").click()
        except (NoSuchElementException, WebDriverException):
            continue
