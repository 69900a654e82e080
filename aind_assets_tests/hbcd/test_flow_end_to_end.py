"""The whole HBCD flow through Dagster on the real S3 server and a Mongo-wire DocDB: discovery,
de-identification with its blocking leak check, processing, CBRAIN observation, staleness,
re-identification, and afterwards a scan of every place an identifier must never reach."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from aind_assets.hbcd.deid.sensors import hbcd_daily_deidentification, hbcd_session_discovery
from aind_assets.hbcd.formats.tsv import parse_tsv
from aind_assets.hbcd.keys import (
    CBRAIN_DERIVATIVES,
    DEIDENTIFIED_DATASET,
    DEIDENTIFIED_SESSION,
    LORIS_CHANGE_FEED,
    REIDENTIFIED_DERIVATIVES,
    SESSION_DERIVATIVES,
    STALENESS_CHECK,
)
from aind_assets.hbcd.manifests import DerivativeManifest
from aind_assets.hbcd.processing.sensors import hbcd_cbrain_observer, hbcd_derivatives_sensor
from aind_assets.hbcd.processing.store import session_listing
from aind_assets.hbcd.sources.assets import hbcd_identified_observer
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url
from aind_assets_tests.hbcd.flow_support import (
    RECORDS,
    World,
    identifier_hits,
    make_world,
    scan_instance_storage,
    scan_store,
)


def _metadata(w: World, key: dg.AssetKey, partition: str | None = None) -> dict:
    records = w.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    assert records, f"no materialization of {key.to_user_string()} {partition}"
    return {k: getattr(v, "value", v) for k, v in records[0].asset_materialization.metadata.items()}


def _ok(results: list[dg.ExecuteInProcessResult]) -> None:
    for r in results:
        assert r.success, [e.message for e in r.all_events if e.is_failure]


def _check_outcomes(results: list[dg.ExecuteInProcessResult]) -> list[bool]:
    return [
        e.event_specific_data.passed
        for r in results
        for e in r.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]


def _plant_hiding_places(w: World) -> dict[str, str]:
    """Identifiers in more places than the demo tree has: a UTF-16 log, an unsupported file, a
    subject folder that is not in the map (with its participants.tsv row)."""
    row = w.idmap.rows[0]
    ses = f"sub-{row.dccid}/ses-V02"
    log = f"converted {row.pscid}_{row.dccid} at {row.site}; code 9{row.dccid}7\n"
    w.store.put_bytes(
        w.source_url(f"{ses}/sub-{row.dccid}_ses-V02_conversion.log"), log.encode("utf-16")
    )
    w.store.put_bytes(
        w.source_url(f"{ses}/anat/sub-{row.dccid}_ses-V02_T1w.dcm"), b"DICM" + row.dccid.encode()
    )
    w.store.put_bytes(
        w.source_url("sub-999999/ses-V02/anat/sub-999999_ses-V02_T1w.json"),
        b'{"PatientID": "999999"}',
    )
    participants = w.store.get_bytes(w.source_url("participants.tsv")).decode()
    participants += "sub-999999\tUMN\tF\t39\t123\n"
    w.store.put_bytes(w.source_url("participants.tsv"), participants.encode())
    return {"log": log}


def _write_cbrain_output(w: World, row, ses: str) -> str:  # noqa: ANN001 - IdentityRow
    """What CBRAIN would leave: outputs and an input manifest covering the session's anat/."""
    layout, rc = w.layout, row.rc_id
    out = layout.derivative_folder(rc, ses, "bibsnet")
    w.store.put_bytes(
        join_url(out, f"ses-{ses}/anat/sub-{rc}_ses-{ses}_desc-aseg_dseg.txt"),
        f"segmentation of sub-{rc}\n".encode(),
    )
    anat = [i for i in session_listing(w.store, layout, rc, ses) if f"/ses-{ses}/anat/" in i.url]
    manifest = [
        {
            "Key": "bucket-prefix/" + i.relative_to(layout.deidentified_root),
            "Size": i.size,
            "LastModified": i.last_modified.isoformat(),
        }
        for i in anat
    ]
    url = layout.manifest_url(rc, ses, "bibsnet")
    w.store.put_bytes(url, json.dumps(manifest).encode())
    return url


def test_full_flow_on_s3(
    s3_store: ObjectStoreResource, docdb: DocDBResource, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        w = make_world(s3_store, docdb, instance, tmp_path, n_subjects=2)
        planted = _plant_hiding_places(w)
        row0, row1 = w.idmap.rows[0], w.idmap.rows[1]
        key0 = f"sub-{row0.rc_id}_ses-V02"
        assert w.automate() == []  # the automation sensor's first tick: nothing to do yet

        # --- discovery -> de-identification (+ blocking leak check) --------------------------
        tick = w.tick(hbcd_session_discovery)
        # the 4 sessions in one batch run (a partition range), the dataset-level files in it
        [run] = tick.run_requests
        assert run.asset_selection == [DEIDENTIFIED_SESSION, DEIDENTIFIED_DATASET]
        assert sorted(w.sessions_of(run)) == sorted(
            f"sub-{r.rc_id}_ses-{s}" for r in w.idmap.rows for s in ("V02", "V03")
        )
        assert run.tags["aind/flow"] == "hbcd"
        # the identified sessions observed (their data versions; in the privacy scan below)
        assert len(w.tick(hbcd_identified_observer).asset_events) == 4
        results = w.run_all(tick.run_requests)
        _ok(results)
        assert _check_outcomes(results) == [True] * 5

        # nothing identifying anywhere on the de-identified side
        n, hits = scan_store(w.store, w.layout.deidentified_root, w.idmap)
        assert n > 30 and hits == []
        assert not w.store.list_objects(w.layout.deidentified_bids + "/sub-999999")

        # what was kept: numeric codes, integers, UTF-16, structure
        bids = w.layout.deidentified_bids
        participants = parse_tsv(w.store.get_bytes(f"{bids}/participants.tsv").decode())
        assert participants.column("participant_id") == [f"sub-{r.rc_id}" for r in w.idmap.rows]
        src = parse_tsv((w.source_dir / "assembly_bids/participants.tsv").read_text())
        assert participants.column("medication_code") == src.column("medication_code")
        assert f"9{row0.dccid}7" in participants.column("medication_code")
        assert participants.column("site") == [
            w.idmap.anonymized_site(r.site) for r in w.idmap.rows
        ]
        rc_ses = f"{bids}/sub-{row0.rc_id}/ses-V02"
        scans = parse_tsv(
            w.store.get_bytes(f"{rc_ses}/sub-{row0.rc_id}_ses-V02_scans.tsv").decode()
        )
        src_scans = parse_tsv(
            (
                w.source_dir
                / f"assembly_bids/sub-{row0.dccid}/ses-V02/sub-{row0.dccid}_ses-V02_scans.tsv"
            ).read_text()
        )
        assert scans.column("QU_motion") == src_scans.column("QU_motion")  # "2", never "2.0"
        log = w.store.get_bytes(f"{rc_ses}/sub-{row0.rc_id}_ses-V02_conversion.log")
        assert log.startswith(b"\xff\xfe")
        assert log.decode("utf-16") == planted["log"].replace(
            f"{row0.pscid}_{row0.dccid}", row0.rc_id
        ).replace(row0.site, w.idmap.anonymized_site(row0.site))
        meta = _metadata(w, DEIDENTIFIED_SESSION, key0)
        assert meta["unsupported files (not copied)"] == [
            f"sub-{row0.rc_id}/ses-V02/anat/sub-{row0.rc_id}_ses-V02_T1w.dcm"
        ]
        assert meta["de-identification notes"]["JSON: dropped PatientID"] >= 3
        dataset_meta = _metadata(w, DEIDENTIFIED_DATASET)
        assert dataset_meta["de-identification notes"] == {
            "TSV: dropped 1 row(s) whose participant_id is not mapped": 1
        }
        # each object records its source version
        info = w.store.info(f"{rc_ses}/anat/sub-{row0.rc_id}_ses-V02_run-001_T1w.nii.gz")
        src_info = w.store.info(
            w.source_url(
                f"sub-{row0.dccid}/ses-V02/anat/sub-{row0.dccid}_ses-V02_run-001_T1w.nii.gz"
            )
        )
        assert info.metadata["source-etag"] == src_info.etag

        # idempotent: nothing new to request
        again = w.tick(hbcd_session_discovery)
        assert again.run_requests == []
        assert "1 subject folder(s) not in the identity map were not processed" in w.messages[-1]

        # --- processing: first runs requested for verified sessions -------------------------
        tick = w.tick(hbcd_derivatives_sensor)
        assert len(tick.run_requests) == 4
        results = w.run_all(tick.run_requests)
        _ok(results)
        assert _check_outcomes(results) == [True] * 4
        proc = _metadata(w, SESSION_DERIVATIVES, key0)
        assert proc["images"] == 3 and proc["qc"]
        manifest_url = w.layout.manifest_url(row0.rc_id, "V02", "imagestats")
        manifest = DerivativeManifest.parse(w.store.get_bytes(manifest_url))
        assert len(manifest.entries) == len(session_listing(w.store, w.layout, row0.rc_id, "V02"))
        description = json.loads(
            w.store.get_bytes(
                f"{w.layout.deidentified_derivatives}/ses-V02/imagestats/dataset_description.json"
            )
        )
        assert description["GeneratedBy"][0]["Name"] == "aind-assets imagestats"
        assert w.tick(hbcd_derivatives_sensor).run_requests == []

        # --- CBRAIN outputs appear and are observed --------------------------------------------
        cbrain_manifest = _write_cbrain_output(w, row0, "V02")
        tick = w.tick(hbcd_cbrain_observer)
        assert [e.asset_key for e in tick.asset_events] == [CBRAIN_DERIVATIVES]
        observed = w.instance.fetch_materializations(CBRAIN_DERIVATIVES, limit=1).records[0]
        assert observed.asset_materialization.metadata["manifests"].value == 1

        # --- re-identification ---------------------------------------------------------------
        # (its automation condition: derivatives were processed and CBRAIN outputs observed)
        requests = w.automate()
        assert [(r.partition_key, r.asset_selection) for r in requests] == [
            (None, [LORIS_CHANGE_FEED, REIDENTIFIED_DERIVATIVES])
        ]
        _ok(w.run_all(requests))
        reid = _metadata(w, REIDENTIFIED_DERIVATIVES)
        n_derivatives = len(w.store.list_objects(w.layout.deidentified_derivatives))
        assert reid["new"] == n_derivatives and reid["orphans deleted"] == 0
        ident = w.layout.identified_derivatives
        stats = json.loads(
            w.store.get_bytes(
                f"{ident}/ses-V02/imagestats/sub-{row0.dccid}/ses-V02/anat/sub-{row0.dccid}_ses-V02_run-001_desc-imagestats_T1w.json"
            )
        )
        assert stats["Sources"] == [
            f"bids:raw:sub-{row0.dccid}/ses-V02/anat/sub-{row0.dccid}_ses-V02_run-001_T1w.nii.gz"
        ]
        assert w.store.exists(f"{ident}/ses-V02/cbrain_misc/sub-{row0.dccid}_bibsnet_ses-V02.json")
        assert w.automate() == []

        # --- the source session changes: redone, derivatives stale, deleted, re-requested -------
        src = f"sub-{row0.dccid}/ses-V02"
        for rel in (
            f"fmap/sub-{row0.dccid}_ses-V02_dir-PA_run-001_epi.nii.gz",
            f"fmap/sub-{row0.dccid}_ses-V02_dir-PA_run-001_epi.json",
        ):
            w.store.delete(w.source_url(f"{src}/{rel}"))
        for ext in ("nii.gz", "json"):
            w.store.copy(
                w.source_url(f"{src}/anat/sub-{row0.dccid}_ses-V02_run-001_T1w.{ext}"),
                w.source_url(f"{src}/anat/sub-{row0.dccid}_ses-V02_run-002_T1w.{ext}"),
            )
        tick = w.tick(hbcd_session_discovery)
        assert [r.partition_key for r in tick.run_requests] == [key0]  # only what changed
        _ok(w.run_all(tick.run_requests))
        meta = _metadata(w, DEIDENTIFIED_SESSION, key0)
        assert (meta["files written"], meta["files deleted"]) == (2, 2)
        assert meta["files unchanged"] > 5

        tick = w.tick(hbcd_derivatives_sensor)
        assert [(r.partition_key, r.asset_selection) for r in tick.run_requests] == [
            (key0, [SESSION_DERIVATIVES])
        ]
        failed = {(e.asset_key, e.partition) for e in tick.asset_events if not e.passed}
        assert failed == {(SESSION_DERIVATIVES, key0), (CBRAIN_DERIVATIVES, None)}
        assert all(e.check_name == STALENESS_CHECK for e in tick.asset_events)
        assert not w.store.exists(manifest_url) and not w.store.exists(cbrain_manifest)
        assert not w.store.list_objects(w.layout.derivative_folder(row0.rc_id, "V02", "bibsnet"))
        history = w.instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(SESSION_DERIVATIVES, STALENESS_CHECK), limit=1
        )
        assert history[0].partition == key0
        assert history[0].event.dagster_event.event_specific_data.passed is False
        # the other sessions' derivatives were not touched
        assert w.store.exists(w.layout.manifest_url(row1.rc_id, "V02", "imagestats"))

        results = w.run_all(tick.run_requests)
        _ok(results)
        assert _check_outcomes(results) == [True]
        tick = w.tick(hbcd_cbrain_observer)  # the CBRAIN outputs are gone
        assert tick.asset_events[-1].metadata["manifests"].value == 0

        _ok(w.run_all(w.automate()))
        reid = _metadata(w, REIDENTIFIED_DERIVATIVES)
        assert reid["new"] == 1  # the run-002 statistics
        # the stale derivative was deleted and made again: its 2 statistics, QC table, manifest
        assert reid["newer (replaced)"] == 4
        assert reid["orphans deleted"] == 3  # epi statistics, CBRAIN output and manifest
        assert reid["unchanged"] == len(w.store.list_objects(w.layout.deidentified_derivatives)) - 5
        assert not w.store.exists(
            f"{ident}/ses-V02/cbrain_misc/sub-{row0.dccid}_bibsnet_ses-V02.json"
        )
        assert w.store.exists(
            f"{ident}/ses-V02/imagestats/sub-{row0.dccid}/ses-V02/anat/sub-{row0.dccid}_ses-V02_run-002_desc-imagestats_T1w.json"
        )

        # --- the daily schedule agrees that everything is done --------------------------------
        with dg.build_schedule_context(
            instance=instance,
            resources={"hbcd": w.hbcd},
            repository_def=w.defs.get_repository_def(),
        ) as ctx:
            assert isinstance(hbcd_daily_deidentification(ctx), dg.SkipReason)

        # --- privacy: Dagster's storage, records, outputs, cursors, messages -------------------
        n_files, hits = scan_instance_storage(
            home, w.idmap, expect=[key0, row0.rc_id, "hbcd/reason"]
        )
        assert n_files > 5 and hits == []
        for text in [*w.cursors.values(), *w.messages]:
            assert identifier_hits(text or "", w.idmap, "sensor") == []
        docs = list(docdb.find(RECORDS, {}))
        assert len(docs) >= 10  # one per distinct (asset, partition, inputs, code)
        assert identifier_hits(json.dumps(docs, default=str), w.idmap, "docdb") == []
        n, hits = scan_store(w.store, w.io_root, w.idmap)
        pointers = [i for i in w.store.list_objects(w.io_root) if i.url.endswith("/CURRENT.json")]
        assert (
            len(pointers) == 11 and n >= 3 * 11 and hits == []
        )  # 11 committed outputs (incl. loris_change_feed)
        n, hits = scan_store(w.store, w.layout.deidentified_root, w.idmap)
        assert hits == []
