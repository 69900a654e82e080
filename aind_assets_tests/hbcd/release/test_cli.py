"""``aind-assets release ...`` (the ``register`` function the CLI wires in), on a local store
and a real Dagster instance directory."""

from __future__ import annotations

import argparse
from pathlib import Path

import dagster as dg
import pytest

from aind_assets.hbcd.release import cli as release_cli
from aind_assets.hbcd.release.errors import ReleaseAlreadyCompleteError
from aind_assets.hbcd.release.plan import MARKER
from aind_assets.hbcd.release.spec import load_release_spec
from aind_assets.hbcd.release.specs import read_spec
from aind_assets.resources.object_store import ObjectStoreResource

EXAMPLE = Path(release_cli.__file__).parent / "examples" / "release.yaml"


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="aind-assets")
    release_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("AIND_IO_ROOT", "HBCD_STAGING_ROOT", "AIND_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AIND_STORE_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path


def test_register_check_list(env: Path, capsys: pytest.CaptureFixture[str]):
    assert _cli("release", "check", str(EXAMPLE)) == 0
    assert _cli("release", "register", str(EXAMPLE)) == 0
    out = capsys.readouterr().out
    assert "release spec 1.0 registered at" in out
    assert "partition 1.0 added to hbcd_releases" in out

    store = ObjectStoreResource(root=str(env / "store"))
    specs_root = str(env / "store" / "dagster-io" / "hbcd" / "release_specs")
    assert read_spec(store, specs_root, "1.0") == load_release_spec(EXAMPLE.read_text())
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("hbcd_releases") == ["1.0"]

    assert _cli("release", "register", str(EXAMPLE)) == 0  # again: nothing new
    assert "already in hbcd_releases" in capsys.readouterr().out
    assert _cli("release", "list") == 0
    assert capsys.readouterr().out == "1.0\tnot complete\n"

    # a complete release keeps its spec unless forced
    store.put_bytes(str(env / "store" / "hbcd-staging" / "1.0" / MARKER), b"{}")
    changed = env / "changed.yaml"
    changed.write_text(
        EXAMPLE.read_text().replace("min_file_age_hours: 72", "min_file_age_hours: 1")
    )
    with pytest.raises(
        ReleaseAlreadyCompleteError,
        match="release 1.0 is complete and registered with a different spec",
    ):
        _cli("release", "register", str(changed))
    assert _cli("release", "register", "--force", "--no-partition", str(changed)) == 0


def test_bad_spec_names_the_file(env: Path):
    bad = env / "bad.yaml"
    bad.write_text("release: r1\nqc: {default: {QU_motion: [2, smaller]}}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: invalid release spec: qc.default"):
        _cli("release", "check", str(bad))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        _cli("release", "register", str(env / "missing.yaml"))
