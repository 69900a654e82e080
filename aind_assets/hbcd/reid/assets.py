"""The re-identification asset ``hbcd/reidentified_derivatives``: derivatives copied back to the
identified side (thin: the work is in :mod:`aind_assets.hbcd.reid.store`). Its value and record
hold de-identified paths and counts only.
"""

import dagster as dg
from pydantic import BaseModel

from aind_assets import lineage
from aind_assets.hbcd.keys import (
    CBRAIN_DERIVATIVES,
    FLOW_TAGS,
    GROUP,
    LORIS_CHANGE_FEED,
    OWNERS,
    REIDENTIFIED_DERIVATIVES,
    SESSION_DERIVATIVES,
)
from aind_assets.hbcd.reid.feed import change_feed_root, read_latest_changes
from aind_assets.hbcd.reid.store import reidentify_derivatives
from aind_assets.hbcd.resources import HbcdResource

#: Version of the re-identification logic (:mod:`aind_assets.hbcd.reid.store` and
#: :mod:`~aind_assets.hbcd.reid.plan`); bump it when what is written changes, and the asset shows
#: Unsynced ("new code version") and is re-run by its automation condition.
REIDENTIFY_VERSION = "1"
#: Version of the change-feed summary.
CHANGE_FEED_VERSION = "1"

#: Re-identify once after any derivative changed (a session processed, CBRAIN outputs observed)
#: or the code changed, never while one of them is still being written or it already runs.
#: Not ``eager()``: that waits for every dependency partition to exist, and sessions without
#: derivatives would hold re-identification back forever.
_UPDATED: dg.AutomationCondition = (
    dg.AutomationCondition.any_deps_updated() | dg.AutomationCondition.code_version_changed()
)
REIDENTIFY_WHEN = (
    _UPDATED.since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after derivatives changed")


class ReidentifiedDerivatives(BaseModel):
    """Counts and de-identified paths of what was synced (identified paths are never stored)."""

    new: list[str]
    newer: list[str]
    orphans_deleted: int
    unchanged: int
    unmapped: list[str]


@dg.asset(
    key=REIDENTIFIED_DERIVATIVES,
    deps=[SESSION_DERIVATIVES, CBRAIN_DERIVATIVES],
    group_name=GROUP,
    code_version=REIDENTIFY_VERSION,
    automation_condition=REIDENTIFY_WHEN,
    owners=OWNERS,
    kinds={"s3", "python"},
    tags={**FLOW_TAGS, "hbcd/side": "identified", "hbcd/stage": "reidentification"},
    pool="hbcd_reidentify",
    description=(
        "Derivatives copied back to the identified side for LORIS: derivatives/ synced from the de-identified side to the identified side with "
        "release-candidate IDs replaced by DCCIDs (and anonymized sites by sites) in names and "
        "in .csv .html .json .txt .toml .tsv .log contents; orphans deleted, changed sources "
        "replaced, new ones copied, the rest untouched."
    ),
)
def reidentified_derivatives(
    context: dg.AssetExecutionContext, hbcd: HbcdResource
) -> ReidentifiedDerivatives:
    idmap = hbcd.idmap()
    result = reidentify_derivatives(hbcd.store, hbcd.layout, idmap)
    context.add_output_metadata(
        {
            "new": len(result.new),
            "newer (replaced)": len(result.newer),
            "orphans deleted": result.orphans_deleted,
            "unchanged": result.unchanged,
            "bytes copied": result.bytes_copied,
            "not copied: subject not in the identity map": len(result.unmapped),
            "LORIS change feed": dg.MetadataValue.json(result.changes),
            lineage.META_INPUTS: [hbcd.layout.deidentified_derivatives],
            lineage.META_PARAMETERS: {"identified_root": hbcd.identified_root},
        }
    )
    if result.failed:
        shown = "; ".join(f"{k}: {v}" for k, v in sorted(result.failed.items())[:20])
        raise dg.Failure(
            description=(
                f"{len(result.failed)} derivative file(s) could not be re-identified "
                f"(the others were synced): {shown}"
            ),
            allow_retries=False,
        )
    return ReidentifiedDerivatives(
        new=result.new,
        newer=result.newer,
        orphans_deleted=result.orphans_deleted,
        unchanged=result.unchanged,
        unmapped=result.unmapped,
    )


class LorisChangeCounts(BaseModel):
    """Counts of the latest LORIS change feed (the feed itself, DCCID-keyed, stays on the
    identified side)."""

    removed: int
    replaced: int
    added: int
    candidates: int
    written_at: str


@dg.asset(
    key=LORIS_CHANGE_FEED,
    deps=[REIDENTIFIED_DERIVATIVES],
    group_name=GROUP,
    code_version=CHANGE_FEED_VERSION,
    automation_condition=dg.AutomationCondition.eager(),
    owners=OWNERS,
    kinds={"json"},
    tags={**FLOW_TAGS, "hbcd/side": "identified", "hbcd/stage": "reidentification"},
    description=(
        "The LORIS change feed of the latest re-identification: derivative outputs removed, "
        "replaced and added, DCCID-keyed, written on the identified side "
        "(.aind-assets/reidentified/changes/latest.json); counts only here."
    ),
)
def loris_change_feed(context: dg.AssetExecutionContext, hbcd: HbcdResource) -> LorisChangeCounts:
    feed = read_latest_changes(hbcd.store, hbcd.layout)
    if feed is None:
        raise dg.Failure(
            description="no LORIS change feed yet: materialize hbcd/reidentified_derivatives",
            allow_retries=False,
        )
    counts = feed.get("counts", {})
    value = LorisChangeCounts(
        removed=int(counts.get("removed", 0)),
        replaced=int(counts.get("replaced", 0)),
        added=int(counts.get("added", 0)),
        candidates=len(feed.get("candidates", [])),
        written_at=str(feed.get("written_at", "")),
    )
    context.add_output_metadata(
        {
            "removed": value.removed,
            "replaced": value.replaced,
            "added": value.added,
            "candidates": value.candidates,
            "written_at": value.written_at,
            lineage.META_INPUTS: [change_feed_root(hbcd.layout)],
        }
    )
    return value
