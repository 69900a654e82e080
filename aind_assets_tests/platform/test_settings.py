"""Settings: embedded defaults with an empty environment, S3 + Mongo when variables are set."""

import time
from pathlib import Path

import dagster as dg
import pytest

from aind_assets.definitions import build_resources
from aind_assets.hbcd.definitions import hbcd_resources
from aind_assets.resources.docdb import DocDBError, DocDBResource
from aind_assets.settings import Settings, SettingsError


def test_embedded_defaults_with_empty_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.embedded
    assert s.data_dir == tmp_path / "data"
    assert s.store_root == str(tmp_path / "data" / "store")
    assert s.io_root == f"{tmp_path}/data/store/dagster-io"
    assert s.hbcd_identified_root == f"{tmp_path}/data/store/hbcd-pr"
    assert s.hbcd_identity_map.endswith("hbcd-pr/identifiers/release_identifiers.csv")
    docdb = s.docdb()
    assert docdb.uri == "mongodb://127.0.0.1:27027/?directConnection=true"
    assert s.object_store().endpoint_url is None


def test_s3_and_mongo_from_environment() -> None:
    env = {
        "AIND_DOCDB_URI": "mongodb://reader:hunter2@docdb.example:27017/?tls=false",
        "AIND_DOCDB_DATABASE": "metadata_index",
        "AIND_STORE_ROOT": "s3://aind-platform/prod",
        "AIND_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "shh",
        "HBCD_DEIDENTIFIED_ROOT": "s3://midb-hbcd-main-deid",
        "AIND_RESULTS_ROOT": "s3://aind-analysis-results",
    }
    s = Settings.from_env(env)
    assert not s.embedded
    assert s.io_root == "s3://aind-platform/prod/dagster-io"
    assert s.hbcd_identified_root == "s3://aind-platform/prod/hbcd-pr"
    assert s.hbcd_deidentified_root == "s3://midb-hbcd-main-deid"
    assert s.results_root == "s3://aind-analysis-results"
    assert s.docdb_database == "metadata_index"
    # printable settings never show the password
    assert "hunter2" not in str(s.describe())
    assert "reader:***@docdb.example" in s.describe()["docdb_uri"]


def test_secrets_reach_dagster_as_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIND_DOCDB_URI", "mongodb://u:pw@127.0.0.1:1/?directConnection=true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "shh")
    resources = build_resources(Settings.from_env())
    docdb, store = resources["docdb"], resources["object_store"]
    # the config holds the variable's *name*; Dagster resolves it at run time only
    assert isinstance(docdb.uri, dg.EnvVar) and docdb.uri == "AIND_DOCDB_URI"
    assert isinstance(store.secret_access_key, dg.EnvVar)
    assert store.secret_access_key == "AWS_SECRET_ACCESS_KEY"
    assert isinstance(store.access_key_id, dg.EnvVar)
    assert ":pw@" not in repr(docdb) and "shh" not in repr(store)


@pytest.mark.parametrize(
    "uri",
    ["not-a-uri", "mongodb://u:hunter2@", "mongodb://u:hunter2@127.0.0.1:notaport/"],
)
def test_malformed_uri_is_one_clear_error(uri: str) -> None:
    with pytest.raises(DocDBError, match=r"Malformed DocDB URI .*database 'aind'") as err:
        DocDBResource(uri=uri, database="aind").ping()
    assert "hunter2" not in str(err.value)


def test_unreachable_docdb_fails_fast_naming_host_and_database() -> None:
    from aind_assets.servers import free_port

    port = free_port()  # nothing listens there
    resource = DocDBResource(
        uri=f"mongodb://svc:hunter2@127.0.0.1:{port}/?directConnection=true",
        database="aind",
        server_selection_timeout_ms=2000,
    )
    start = time.monotonic()
    with pytest.raises(DocDBError, match="Cannot reach DocDB at") as err:
        resource.find_one("data_assets", {})
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "'aind'" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("raw", "verify"), [(None, True), ("", True), ("1", True), ("0", False), ("off", False)]
)
def test_verifying_unchanged_images_reaches_the_hbcd_resource(
    raw: str | None, verify: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {} if raw is None else {"HBCD_VERIFY_UNCHANGED_IMAGES": raw}
    settings = Settings.from_env(env)
    resource = hbcd_resources(settings, settings.object_store())["hbcd"]
    assert settings.hbcd_verify_unchanged_images is verify
    assert resource.verify_unchanged_images is verify  # type: ignore[attr-defined]


def test_a_yes_no_setting_that_is_neither_is_one_clear_error() -> None:
    with pytest.raises(SettingsError, match=r"HBCD_VERIFY_UNCHANGED_IMAGES='maybe': use 1/0"):
        Settings.from_env({"HBCD_VERIFY_UNCHANGED_IMAGES": "maybe"})
