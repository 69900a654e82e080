"""Helpers shared by the fixtures: which test reaches a server, what a missing tool does to a test.

Locally a test whose system tool (PostgreSQL, Chromium, chromedriver) is missing is skipped with
the reason and how to install it. In CI (``CI`` set to a true value, as ``.ci/run`` runs) the
tool must be there, so the test fails instead: a green CI run never hides skipped tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

_FALSE = {"", "0", "false", "no", "off"}


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``CI`` is set to a true value (``true``, ``1``, ``yes``…; not ``false``/``0``)."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in _FALSE


def missing_tool(message: str, install: str = "scripts/install-system") -> NoReturn:
    """Skip the test (locally) or fail it (in CI) because a system tool is missing."""
    if in_ci():
        pytest.fail(f"{message} (CI must install it: {install})", pytrace=False)
    pytest.skip(f"{message}; run {install} to install it")


#: The test being run (set by ``aind_assets_tests/conftest.py`` around its setup, call, teardown).
current_test: pytest.Item | None = None


def require_servers_mark(fixture: str) -> None:
    """Fail a test that reaches a server fixture without being marked ``servers``.

    The mark is added from the fixture closure at collection; this catches the other ways in
    (``request.getfixturevalue``), so ``-m "not servers"`` never starts a server unnoticed.
    """
    test = current_test
    if test is not None and test.get_closest_marker("servers") is None:
        pytest.fail(
            f"{test.nodeid} reaches the {fixture} fixture but is not marked 'servers' (request"
            " the fixture as an argument, or mark the test @pytest.mark.servers)",
            pytrace=False,
        )


#: Materialization metadata that differs between any two runs of the same partition: version
#: folders and their links (``path``, ``output``, ``version``), record names and sizes holding
#: times, the record table (its times), durations. Lineage comparisons leave them out and
#: compare the records and ``processing.json`` themselves, :func:`normalized`.
VOLATILE_METADATA = frozenset(
    {
        "path",
        "processing_record",
        "version",
        "duration_s",
        "bytes written",
        "record_name",
        "output",
        "record",
    }
)
_VERSION_ID = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}-[0-9a-f]{6}")
_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIMES = {"start_date_time", "end_date_time", "resources", "written_at", "committed_at"}


def normalized(value: Any) -> Any:
    """``value`` with version ids, run ids and times replaced (they differ between runs)."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items() if k not in _TIMES}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, str):
        return _RUN_ID.sub("<run>", _VERSION_ID.sub("<version>", value))
    return value


def local_cli_env(store_root: str, docdb_uri: str, database: str, data_dir: Path) -> dict[str, str]:
    """The environment of an ``aind-assets`` subprocess on the test's store and DocDB."""
    return {
        **os.environ,
        "AIND_DATA_DIR": str(data_dir),
        "AIND_STORE_ROOT": store_root,
        "AIND_DOCDB_URI": docdb_uri,
        "AIND_DOCDB_DATABASE": database,
    }
