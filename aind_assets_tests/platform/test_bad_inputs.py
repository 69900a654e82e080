"""Bad platform inputs: DocDB URIs (secrets never printed, whatever the URI), environment
variables with unusable values, symbolic links in local stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aind_assets.resources.docdb import DocDBError, DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.redaction import redact_uri, scrub_secrets
from aind_assets.settings import Settings, SettingsError

SECRET = "S3cr3tPw"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            f"mongodb://reader:{SECRET}@db.example:27017/x",
            "mongodb://reader:***@db.example:27017/x",
        ),
        (f"mongodb://reader:ab/{SECRET}@db.example/x", "mongodb://reader:***@db.example/x"),
        (f"mongodb://reader:ab?{SECRET}@db.example/x", "mongodb://reader:***@db.example/x"),
        (f"mongodb://reader:ab#{SECRET}@db.example/x", "mongodb://reader:***@db.example/x"),
        (f"mongodb://reader:a@{SECRET}@db.example/x", "mongodb://reader:***@db.example/x"),
        (
            f"mongodb://reader:{SECRET}%2F@h1:1,h2:2/?replicaSet=rs",
            "mongodb://reader:***@h1:1,h2:2/?replicaSet=rs",
        ),
        (
            f"mongodb+srv://reader:{SECRET}@cluster.example/x",
            "mongodb+srv://reader:***@cluster.example/x",
        ),
        (
            f"mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:{SECRET},SERVICE_NAME:s",
            "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:***,SERVICE_NAME:s",
        ),
        (
            f"mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN%3A{SECRET}",
            "mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:***",
        ),
        (
            f"mongodb://h/?tls=true&tlsCertificateKeyFilePassword={SECRET}",
            "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=***",
        ),
        (f"mongodb://h/?password={SECRET};appname=a", "mongodb://h/?password=***;appname=a"),
        (f"reader:{SECRET}@db.example", "reader:***@db.example"),
        ("mongodb://db.example:27017/x", "mongodb://db.example:27017/x"),
    ],
)
def test_redact_uri_hides_every_secret(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert SECRET not in redact_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        f"mongodb://reader:ab/{SECRET}@db.example/x",
        f"mongodb://reader:ab?{SECRET}@db.example/x",
        f"mongodb://reader:{SECRET}@db.example:notaport/x",
        f"mongodb://reader:{SECRET}/x@db.example:27017",
        f"mongodb://reader:a@{SECRET}@db.example/x",
        f"mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:{SECRET}&w=bogus&bad",
        f"postgres://reader:{SECRET}@db.example/x",
    ],
)
def test_malformed_uri_error_never_holds_the_secret(uri: str) -> None:
    with pytest.raises(DocDBError, match=r"^Malformed DocDB URI '.*' \(database 'd'\): ") as e:
        _ = DocDBResource(uri=uri, database="d").client
    assert SECRET not in str(e.value)
    assert "ab" + "/" not in str(e.value)


def test_scrub_removes_pieces_of_a_mis_split_password_but_not_other_words() -> None:
    uri = "mongodb://u:pa?ss-word@h/x"
    assert scrub_secrets("key=value pairs; port 'pa'; ss-word", uri) == (
        "key=value pairs; port '***'; ***"
    )


def test_settings_command_prints_no_secret(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    from aind_assets.cli import main

    monkeypatch.setenv(
        "AIND_DOCDB_URI",
        f"mongodb://reader:x#{SECRET}@db.example/?authMechanismProperties=AWS_SESSION_TOKEN:{SECRET}",
    )
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and "reader:***@db.example" in out


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"AIND_EMBEDDED_DOCDB_PORT": "twenty"},
            r"AIND_EMBEDDED_DOCDB_PORT='twenty' is not a port number",
        ),
        (
            {"AIND_EMBEDDED_DOCDB_PORT": "70000"},
            r"AIND_EMBEDDED_DOCDB_PORT='70000' is outside 1-65535",
        ),
        (
            {"AIND_DOCDB_URI": f"postgres://u:{SECRET}@h/x"},
            r"AIND_DOCDB_URI='postgres://u:\*\*\*@h/x': a DocDB URI starts with mongodb://",
        ),
        ({"AIND_DOCDB_DATABASE": "my.db"}, r"AIND_DOCDB_DATABASE='my\.db': a database name"),
        (
            {"AIND_S3_ENDPOINT_URL": "127.0.0.1:8333"},
            r"AIND_S3_ENDPOINT_URL='127\.0\.0\.1:8333': an endpoint is an http://",
        ),
        (
            {"AIND_STORE_ROOT": "gs://bucket/x"},
            r"AIND_STORE_ROOT='gs://bucket/x': unsupported scheme 'gs'",
        ),
        (
            {"AIND_RESULTS_ROOT": "s3:/bucket/x"},
            r"AIND_RESULTS_ROOT='s3:/bucket/x': an S3 location is written s3://bucket/prefix",
        ),
        (
            {"HBCD_STAGING_ROOT": "s3://My_Bucket/x"},
            r"HBCD_STAGING_ROOT='s3://My_Bucket/x': 'My_Bucket' is not an S3 bucket name",
        ),
        (
            {"AIND_IO_ROOT": "relative/io"},
            r"AIND_IO_ROOT='relative/io': a local location must be an absolute path",
        ),
        (
            {"HBCD_IDENTITY_MAP": " s3://b-1/map.csv"},
            r"HBCD_IDENTITY_MAP=' s3://b-1/map\.csv': leading or trailing spaces",
        ),
    ],
)
def test_bad_environment_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{message}") as e:
        Settings.from_env(env)
    assert SECRET not in str(e.value)


def test_links_out_of_a_local_store_are_not_listed(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    (outside / "d").mkdir(parents=True)
    (outside / "secret.txt").write_text("not yours")
    (root / "a" / "real.txt").write_text("ok")
    os.symlink(outside / "secret.txt", root / "a" / "file-link.txt")
    os.symlink(outside / "d", root / "dir-link")
    os.symlink(root / "a" / "real.txt", root / "inside-link.txt")
    store = ObjectStoreResource(root=str(root))
    listed = sorted(Path(i.url).name for i in store.list_objects(str(root)))
    assert listed == ["inside-link.txt", "real.txt"]
    refused = store.refused_links(str(root))
    assert refused == {
        str(root / "a" / "file-link.txt"): (
            "symbolic link pointing outside the listed tree: refused, its target is not read"
        ),
        str(root / "dir-link"): (
            "symbolic link pointing outside the listed tree: refused, its target is not read"
        ),
    }
    # listing the sub-folder: a link to a file of the parent points outside *it*
    (root / "top.txt").write_text("parent's")
    os.symlink(root / "top.txt", root / "a" / "up.txt")
    assert [Path(i.url).name for i in store.list_objects(str(root / "a"))] == ["real.txt"]
