"""`aind-assets demo seed` fills both stores with data the flows can use."""

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pynwb

from aind_assets.demo.seed import is_seeded, seed_demo
from aind_assets.hbcd.identity.idmap import parse_identity_map
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.settings import Settings
from aind_assets_tests.support import local_cli_env


def _settings(store: ObjectStoreResource, docdb: DocDBResource, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"AIND_DATA_DIR": str(tmp_path), "AIND_STORE_ROOT": store.root, "AIND_DOCDB_URI": docdb.uri}
    ).model_copy(update={"docdb_database": docdb.database})


def test_seed_fills_docdb_and_the_object_store(
    s3_store: ObjectStoreResource, docdb: DocDBResource, tmp_path: Path
) -> None:
    settings = _settings(s3_store, docdb, tmp_path)
    assert not is_seeded(settings, docdb, s3_store)
    report = seed_demo(settings, docdb, s3_store)
    assert is_seeded(settings, docdb, s3_store)

    # AIND: >= 20 records shaped like AIND data assets, each NWB file real and readable
    records = list(docdb.find(settings.assets_collection, {}))
    assert len(records) == report.records >= 20
    for r in records:
        assert {"_id", "name", "location", "created", "last_modified", "external_links"} <= set(r)
        assert r["subject"]["subject_id"] and r["data_description"]["project_name"]
        assert r["data_description"]["modalities"] and r["location"].startswith(
            settings.data_assets_root
        )
    nwb_urls = s3_store.glob(f"{settings.data_assets_root}/**/*.nwb")
    assert len(nwb_urls) == report.nwb_files >= 20
    ecephys = next(u for u in nwb_urls if "/ecephys_" in u)
    local = tmp_path / "one.nwb"
    s3_store.get_file(ecephys, local)
    with pynwb.NWBHDF5IO(str(local), "r") as f:
        nwb = f.read()
        assert len(nwb.units) > 0 and len(nwb.units["spike_times"][0]) > 0
        assert len(nwb.trials) > 0

    # HBCD: identified BIDS tree (>= 5 subjects x 2 sessions) and the identifier map
    bids = f"{settings.hbcd_identified_root}/assembly_bids"
    keys = [i.relative_to(bids) for i in s3_store.list_objects(bids)]
    assert {"participants.tsv", "dataset_description.json"} <= set(keys)
    sessions = {tuple(k.split("/")[:2]) for k in keys if k.startswith("sub-") and "/ses-" in k}
    assert len({s for s, _ in sessions}) >= 5 and len(sessions) >= 10
    assert any(k.endswith("_T1w.nii.gz") for k in keys) and any(
        k.endswith("_bold.nii.gz") for k in keys
    )
    assert any(k.endswith("_scans.tsv") for k in keys) and any(
        k.endswith("_sessions.tsv") for k in keys
    )
    scans = pd.read_csv(
        io.BytesIO(
            s3_store.get_bytes(f"{bids}/{next(k for k in keys if k.endswith('_scans.tsv'))}")
        ),
        sep="\t",
        dtype=str,
    )
    assert scans.columns[0] == "filename" and "HBCD_compliant" in scans.columns
    idmap = parse_identity_map(s3_store.get_bytes(settings.hbcd_identity_map).decode(), "map")
    assert len(idmap.identifiers()) > 0


def test_seed_command_line(
    local_store: ObjectStoreResource, docdb: DocDBResource, tmp_path: Path
) -> None:
    env = local_cli_env(local_store.root, docdb.uri, docdb.database, tmp_path)
    cli = [sys.executable, "-m", "aind_assets.cli", "demo", "seed", "--if-empty"]
    first = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "seeded 24 data-asset records" in first.stdout
    # one progress line per step on stderr, stdout left to the result
    steps = [line for line in first.stderr.splitlines() if "] demo seed: " in line]
    assert [s.split("demo seed: ")[1].split()[0] for s in steps] == [
        "writing",
        "uploading",
        "writing",
        "uploaded",
        "upserting",
    ], first.stderr
    assert "demo seed" not in first.stdout
    assert docdb.count("data_assets") == 24
    again = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already present" in again.stdout
