"""HBCD release staging in Dagster (thin: the logic is in spec, selection, plan, staging and summaries).

Assets, all partitioned by the dynamic partitions ``hbcd_releases`` (one key per release
identifier, registered by ``aind-assets release register`` or by the ``hbcd_release_specs``
sensor from the specs under ``<io root>/hbcd/release_specs/``):

* ``hbcd/release_ready_sessions``: the selection table (one row per session, session and
  pipeline, and file, with the reason for everything left out);
* ``hbcd/release_staging``: the staged release under ``<staging root>/<release>/`` with its
  ``_COMPLETE`` marker (checked by the blocking checks in :mod:`~aind_assets.hbcd.release.checks`);
* ``hbcd/release_summary``: derivative outputs per subject, session and pipeline, and the changes
  since the previous release, as Parquet and CSV under ``<staging root>/<release>/loris/``.
"""

import dagster as dg
import pandas as pd
from pydantic import Field

from aind_assets import lineage
from aind_assets.hbcd.keys import FLOW_TAGS, OWNERS
from aind_assets.hbcd.release import plan, specs, staging, summaries
from aind_assets.hbcd.release.resources import (
    GROUP,
    READY_KEY,
    RELEASES,
    STAGING_KEY,
    SUMMARY_KEY,
    HbcdReleaseResource,
    release_partition,
)
from aind_assets.hbcd.release.spec import RAW
from aind_assets.io_managers.deployment import deployment_id, ended_here
from aind_assets.resources.docdb import DocDBResource, LeaseHeldError
from aind_assets.resources.urls import join_url

#: Upstream assets of the de-identification flow (read directly from the de-identified root):
#: every session's de-identified data and derivatives, the dataset-level files, CBRAIN outputs.
UPSTREAM = [
    dg.AssetDep(
        dg.AssetKey(["hbcd", "deidentified_session"]), partition_mapping=dg.AllPartitionMapping()
    ),
    dg.AssetDep(
        dg.AssetKey(["hbcd", "session_derivatives"]), partition_mapping=dg.AllPartitionMapping()
    ),
    dg.AssetDep(dg.AssetKey(["hbcd", "deidentified_dataset"])),
    dg.AssetDep(dg.AssetKey(["hbcd", "cbrain_derivatives"])),
]
#: Version of the release logic (selection, staging, summaries): bump it when what a release
#: contains or how it is laid out changes; staged releases then show Unsynced ("new code version").
#: A complete release is never changed in place, so re-staging stays a person's decision.
RELEASE_VERSION = "1"
TAGS = {**FLOW_TAGS, "hbcd/side": "deidentified", "hbcd/stage": "release"}
LORIS_DIR = "loris"
LEASE_TTL_S = 300.0
METADATA_ROWS = 100


@dg.asset(
    key=READY_KEY,
    partitions_def=RELEASES,
    deps=UPSTREAM,
    group_name=GROUP,
    code_version=RELEASE_VERSION,
    owners=OWNERS,
    kinds={"pandas", "bids"},
    tags=TAGS,
    metadata={lineage.META_PROCESS_TYPE: "Other"},
)
def release_ready_sessions(
    context: dg.AssetExecutionContext, hbcd_release: HbcdReleaseResource
) -> pd.DataFrame:
    """Sessions and files that go into the release, with the reason for every one left out
    (QC criteria, minimum file age, missing scans.tsv, stale or unused derivatives...)."""
    release = release_partition(context)
    spec = hbcd_release.spec(release)
    decisions = plan.select_sessions(
        hbcd_release.object_store, spec, hbcd_release.deidentified_root
    )
    df = plan.decisions_frame(decisions)
    sessions = df[df["kind"] == "session"]
    files = df[df["kind"].isin(["raw", "derivative"])]
    excluded = pd.concat(
        [
            sessions[~sessions["included"]],
            df[(df["kind"] == "pipeline") & ~df["included"]],
            files[~files["included"] & (files["reason"] != "")],
        ]
    )
    kept_below_qc = files[files["included"] & (files["reason"] != "")]
    context.add_output_metadata(
        {
            "release": release,
            "ready_sessions": int(sessions["included"].sum()),
            "excluded_sessions": int((~sessions["included"]).sum()),
            "included_files": int(files["included"].sum()),
            "excluded_files": int((~files["included"]).sum()),
            "kept_below_qc": int(len(kept_below_qc)),
            "ready": dg.MetadataValue.md(
                summaries.markdown_table(
                    sessions[sessions["included"]], ["session"], limit=METADATA_ROWS
                )
            ),
            "excluded": dg.MetadataValue.md(
                summaries.markdown_table(
                    excluded,
                    ["kind", "session", "pipeline", "source", "reason"],
                    limit=METADATA_ROWS,
                )
            ),
            "kept_although_below_qc": dg.MetadataValue.md(
                summaries.markdown_table(kept_below_qc, ["source", "reason"], limit=METADATA_ROWS)
            ),
            lineage.META_PARAMETERS: {"release_spec": spec.model_dump(mode="json")},
            lineage.META_INPUTS: [
                join_url(hbcd_release.deidentified_root, RAW),
                join_url(hbcd_release.deidentified_root, "derivatives"),
                specs.spec_url(hbcd_release.specs_root, release),
            ],
        }
    )
    return df


class StagingConfig(dg.Config):
    replace_complete: bool = Field(
        default=False,
        description="Re-stage a complete release whose release-ready data changed "
        "(a complete release is otherwise never changed in place)",
    )
    lease_ttl_s: float = Field(
        default=LEASE_TTL_S,
        gt=0,
        description="How long the staging lease outlives its holder's last heartbeat: a run "
        "killed, or of another deployment, blocks the release at most this long",
    )


@dg.asset(
    key=STAGING_KEY,
    partitions_def=RELEASES,
    ins={"selection": dg.AssetIn(READY_KEY)},
    group_name=GROUP,
    # one staging per release at a time (a DocDB lease); the pool bounds stagings overall
    pool="hbcd_release_staging",
    code_version=RELEASE_VERSION,
    owners=OWNERS,
    kinds={"s3", "bids"},
    tags=TAGS,
    metadata={lineage.META_PROCESS_TYPE: "Other"},
)
def release_staging(
    context: dg.AssetExecutionContext,
    config: StagingConfig,
    hbcd_release: HbcdReleaseResource,
    docdb: DocDBResource,
    selection: pd.DataFrame,
) -> dict:
    """``<staging root>/<release>/hbcd/{rawdata,derivatives}``: copied through a temporary
    prefix, checked (complete, BIDS-valid, no identifier), promoted, then ``processing.json``
    and ``_COMPLETE`` (counts and sha256 of every file) last. Re-running a complete release
    changes nothing."""
    release = release_partition(context)
    spec = hbcd_release.spec(release)
    instance = context.instance
    here = deployment_id(instance)
    try:
        with docdb.lease(
            f"hbcd/release_staging/{release}",
            context.run_id,
            ttl_s=config.lease_ttl_s,
            deployment=here,
            is_stale=ended_here(instance, here),
        ) as lease:
            result = staging.stage_release(
                hbcd_release.object_store,
                spec,
                plan.frame_decisions(selection),
                deid_root=hbcd_release.deidentified_root,
                staging_root=hbcd_release.staging_root,
                run_id=context.run_id,
                identifiers=hbcd_release.identifiers(),
                replace_complete=config.replace_complete,
                log=context.log.info,
                guard=lease.check,
            )
    except LeaseHeldError as e:
        where = f" of deployment {e.deployment}" if e.deployment and e.deployment != here else ""
        raise dg.Failure(
            f"release {release} is being staged by run {e.holder}{where} (since {e.since}): "
            "wait for it to finish, or cancel it, then run again (a lease whose holder died "
            f"expires {config.lease_ttl_s:g} s after its last heartbeat)"
        ) from None
    counts = result.counts
    context.add_output_metadata(
        {
            "release_url": dg.MetadataValue.path(result.url),
            "status": result.status,
            "files": counts["files"],
            "bytes": counts["bytes"],
            "subjects": counts["subjects"],
            "sessions": counts["sessions"],
            "sessions_per_pipeline": counts["sessions_per_pipeline"],
            "completed_at": result.marker["completed_at"],
            "plan_sha256": result.marker["plan_sha256"],
            lineage.META_PARAMETERS: {"release_spec": spec.model_dump(mode="json")},
            lineage.META_INPUTS: [
                join_url(hbcd_release.deidentified_root, RAW),
                join_url(hbcd_release.deidentified_root, "derivatives"),
            ],
        }
    )
    return result.summary()


@dg.asset(
    key=SUMMARY_KEY,
    partitions_def=RELEASES,
    deps=[STAGING_KEY],
    group_name=GROUP,
    code_version=RELEASE_VERSION,
    # summarize as soon as a release is staged (also when staged alone from the UI)
    automation_condition=dg.AutomationCondition.eager(),
    owners=OWNERS,
    kinds={"parquet", "csv"},
    tags=TAGS,
    metadata={lineage.META_PROCESS_TYPE: "Other"},
)
def release_summary(
    context: dg.AssetExecutionContext, hbcd_release: HbcdReleaseResource
) -> pd.DataFrame:
    """Derivative outputs per subject, session and pipeline (files, bytes, newest timestamp)
    and what changed since the previous release (added, removed, replaced), for LORIS: Parquet
    and CSV under ``<staging root>/<release>/loris/``."""
    release = release_partition(context)
    store = hbcd_release.object_store
    spec = hbcd_release.spec(release)
    markers = specs.complete_releases(store, hbcd_release.staging_root)
    if release not in markers:
        raise dg.Failure(f"release {release} is not complete (no _COMPLETE marker)")
    previous = summaries.previous_release(markers, release, spec.previous_release)
    current = summaries.derivative_summary(markers[release])
    before = summaries.derivative_summary(markers[previous]) if previous else None
    changes = summaries.summary_changes(current, before)
    out_dir = join_url(hbcd_release.release_url(release), LORIS_DIR)
    written = []
    for name, table in (("derivatives_summary", current), ("derivatives_changes", changes)):
        for fmt in ("parquet", "csv"):
            url = join_url(out_dir, f"{name}.{fmt}")
            store.put_bytes(url, summaries.table_bytes(table, fmt))
            written.append(url)
    counts = changes["change"].value_counts().to_dict()
    context.add_output_metadata(
        {
            "previous_release": previous or "none",
            **{k: int(counts.get(k, 0)) for k in ("added", "removed", "replaced", "unchanged")},
            "summary": dg.MetadataValue.md(
                summaries.markdown_table(current.drop(columns="fingerprint"), limit=METADATA_ROWS)
            ),
            "changes": dg.MetadataValue.md(
                summaries.markdown_table(
                    changes[changes["change"] != "unchanged"],
                    ["subject", "session", "pipeline", "change", "files", "bytes", "newest"],
                    limit=METADATA_ROWS,
                )
            ),
            "files_written": written,
            lineage.META_INPUTS: [
                join_url(hbcd_release.release_url(r), staging.MARKER)
                for r in (release, previous)
                if r
            ],
        }
    )
    return changes
