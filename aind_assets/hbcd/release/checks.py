"""Blocking checks on a staged release (thin: the rules are in release_validity.py and leaks.py).

Both read the promoted ``<staging root>/<release>/hbcd/`` as a data user would receive it, and
both fail when the release has no ``_COMPLETE`` marker or its files differ from the marker's
manifest. Blocking: a failure stops ``hbcd/release_summary`` in the same run.

* ``bids_valid``: every path through the ``bids-validator`` package (derivatives through the
  BIDS schema's derivative rules), the tabular rules of participants/sessions/scans TSVs, and
  ``dataset_description.json`` (with ``GeneratedBy`` for derivatives);
* ``no_identifiers``: every file through the de-identification leak scanner (paths, gzip
  headers, NIfTI headers and extensions, text in three encodings, parsed JSON), and its sha256
  against the marker.
"""

import dagster as dg

from aind_assets.hbcd.release import staging, summaries
from aind_assets.hbcd.release.resources import STAGING_KEY, HbcdReleaseResource
from aind_assets.hbcd.release.validity import Problem
from aind_assets.resources.urls import join_url, relative_key

__all__ = ["release_bids_valid", "release_no_identifiers"]

ROWS = 100


def checked_release(context: dg.AssetCheckExecutionContext) -> str:
    """The release to check: the run's partition, or (checks launched on their own, without a
    partition) the release of the latest ``hbcd/release_staging`` materialization."""
    op = context.op_execution_context
    if op.has_partition_key:
        return op.partition_key
    event = context.instance.get_latest_materialization_event(STAGING_KEY)
    partition = event.dagster_event.partition if event and event.dagster_event else None
    if not partition:
        raise dg.Failure("no release of hbcd/release_staging has been materialized yet")
    return partition


def _promoted(hbcd_release: HbcdReleaseResource, release: str):
    """(marker or None, hbcd root URL, {relpath: size}, manifest problems)."""
    store = hbcd_release.object_store
    marker = staging.read_marker(store, hbcd_release.staging_root, release)
    root = join_url(hbcd_release.release_url(release), staging.HBCD)
    files = {relative_key(i.url, root): i.size for i in store.list_objects(root)}
    problems: list[Problem] = []
    if marker is None:
        problems.append(Problem(staging.MARKER, "complete", "no completion marker"))
        return None, root, files, problems
    expected = {f["path"][len(staging.HBCD) + 1 :]: f["size"] for f in marker["files"]}
    for p in sorted(expected.keys() - files.keys()):
        problems.append(Problem(p, "manifest", "in the marker's manifest but missing"))
    for p in sorted(files.keys() - expected.keys()):
        problems.append(Problem(p, "manifest", "not in the marker's manifest"))
    for p in sorted(expected.keys() & files.keys()):
        if expected[p] != files[p]:
            problems.append(Problem(p, "manifest", "size differs from the marker's manifest"))
    return marker, root, files, problems


def _table(problems: list[Problem]) -> dg.MetadataValue:
    import pandas as pd

    df = pd.DataFrame(
        [{"path": p.path, "rule": p.rule, "problem": p.message} for p in problems],
        columns=["path", "rule", "problem"],
    )
    return dg.MetadataValue.md(summaries.markdown_table(df, limit=ROWS))


@dg.asset_check(
    asset=STAGING_KEY,
    name="bids_valid",
    blocking=True,
    description="The staged release is BIDS-valid (bids-validator paths, tabular rules, "
    "dataset descriptions) and matches its completion marker",
)
def release_bids_valid(
    context: dg.AssetCheckExecutionContext, hbcd_release: HbcdReleaseResource
) -> dg.AssetCheckResult:
    release = checked_release(context)
    marker, root, files, problems = _promoted(hbcd_release, release)
    ignore = marker["spec"].get("bids_ignore", []) if marker else []
    if files:
        problems += staging.validate_staged(
            hbcd_release.object_store, root, sorted(files), ignore=ignore
        )
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "release": release,
            "files": len(files),
            "problems": len(problems),
            "details": _table(problems),
        },
    )


@dg.asset_check(
    asset=STAGING_KEY,
    name="no_identifiers",
    blocking=True,
    description="No DCCID, PSCID or site ID anywhere in the staged release (names, headers, "
    "content), and every file's sha256 matches the completion marker",
)
def release_no_identifiers(
    context: dg.AssetCheckExecutionContext, hbcd_release: HbcdReleaseResource
) -> dg.AssetCheckResult:
    release = checked_release(context)
    marker, root, files, problems = _promoted(hbcd_release, release)
    findings, sums = staging.scan_release(
        hbcd_release.object_store, root, sorted(files), hbcd_release.identifiers()
    )
    if marker is not None:
        expected = {f["path"][len(staging.HBCD) + 1 :]: f["sha256"] for f in marker["files"]}
        for p, (_, sha) in sorted(sums.items()):
            if p in expected and expected[p] != sha:
                problems.append(Problem(p, "checksum", "sha256 differs from the marker"))
    problems += [Problem(f.path, f"leak:{f.kind}", str(f)) for f in findings]
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "release": release,
            "files_scanned": len(sums),
            "findings": len(findings),
            "problems": len(problems),
            "details": _table(problems),
        },
    )
