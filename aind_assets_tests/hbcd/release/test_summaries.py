"""LORIS-facing summaries and release-to-release changes (pure)."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from aind_assets.hbcd.release.summaries import (
    derivative_summary,
    markdown_table,
    previous_release,
    summary_changes,
    table_bytes,
)


def _f(path: str, source: str, size: int, sha: str, when: str = "2024-05-01T00:00:00+00:00"):
    return {
        "path": f"hbcd/{path}",
        "size": size,
        "sha256": sha,
        "source": source,
        "source_last_modified": when,
    }


def _marker(*files, completed_at="2024-06-01T00:00:00+00:00"):
    return {"completed_at": completed_at, "files": list(files)}


R1 = _marker(
    _f("rawdata/sub-A/ses-V02/anat/x.nii.gz", "assembly_bids/sub-A/ses-V02/anat/x.nii.gz", 9, "r"),
    _f(
        "derivatives/bib/dataset_description.json",
        "derivatives/ses-V02/bib/dataset_description.json",
        5,
        "d",
    ),
    _f(
        "derivatives/bib/sub-A/ses-V02/anat/a.nii.gz",
        "derivatives/ses-V02/bib/sub-A/ses-V02/anat/a.nii.gz",
        10,
        "a1",
    ),
    _f(
        "derivatives/bib/sub-A/ses-V02/anat/b.json",
        "derivatives/ses-V02/bib/sub-A/ses-V02/anat/b.json",
        2,
        "b1",
        "2024-05-03T00:00:00+00:00",
    ),
    _f("derivatives/bib/sub-A.html", "derivatives/ses-V03/bib/sub-A.html", 7, "h"),
    _f(
        "derivatives/bib/sub-B/ses-V02/anat/a.nii.gz",
        "derivatives/ses-V02/bib/sub-B/ses-V02/anat/a.nii.gz",
        10,
        "a2",
    ),
    _f(
        "derivatives/mq/sub-B/ses-V02/x.json", "derivatives/ses-V02/mq/sub-B/ses-V02/x.json", 1, "q"
    ),
)


def test_summary_per_subject_session_pipeline():
    df = derivative_summary(R1)
    rows = df[["subject", "session", "pipeline", "files", "bytes"]].values.tolist()
    assert rows == [
        ["sub-A", "ses-V02", "bib", 2, 12],
        ["sub-A", "ses-V03", "bib", 1, 7],  # a subject-level report: session from its source
        ["sub-B", "ses-V02", "bib", 1, 10],
        ["sub-B", "ses-V02", "mq", 1, 1],
    ]
    assert df.loc[0, "newest"] == pd.Timestamp("2024-05-03T00:00:00+00:00")
    assert "UTC" in str(df["newest"].dtype)


def test_changes_added_removed_replaced_unchanged():
    r2 = _marker(
        _f(
            "derivatives/bib/sub-A/ses-V02/anat/a.nii.gz",
            "derivatives/ses-V02/bib/sub-A/ses-V02/anat/a.nii.gz",
            10,
            "a1-new",
        ),
        _f(
            "derivatives/bib/sub-A/ses-V02/anat/b.json",
            "derivatives/ses-V02/bib/sub-A/ses-V02/anat/b.json",
            2,
            "b1",
        ),
        _f(
            "derivatives/bib/sub-B/ses-V02/anat/a.nii.gz",
            "derivatives/ses-V02/bib/sub-B/ses-V02/anat/a.nii.gz",
            10,
            "a2",
        ),
        _f(
            "derivatives/bib/sub-C/ses-V02/anat/a.nii.gz",
            "derivatives/ses-V02/bib/sub-C/ses-V02/anat/a.nii.gz",
            3,
            "c",
        ),
    )
    changes = summary_changes(derivative_summary(r2), derivative_summary(R1))
    got = {(r.subject, r.session, r.pipeline): r.change for r in changes.itertuples()}
    assert got == {
        ("sub-A", "ses-V02", "bib"): "replaced",
        ("sub-B", "ses-V02", "bib"): "unchanged",
        ("sub-C", "ses-V02", "bib"): "added",
        ("sub-A", "ses-V03", "bib"): "removed",
        ("sub-B", "ses-V02", "mq"): "removed",
    }
    removed = changes[changes.change == "removed"].iloc[0]
    assert (removed.files, removed.previous_files) == (0, 1)
    first = summary_changes(derivative_summary(R1), None)
    assert set(first.change) == {"added"}


def test_previous_release():
    markers = {
        "r1": {"completed_at": "2024-01-01T00:00:00+00:00"},
        "r2": {"completed_at": "2024-02-01T00:00:00+00:00"},
        "r3": {"completed_at": "2024-03-01T00:00:00+00:00"},
    }
    assert previous_release(markers, "r2") == "r1"
    assert previous_release(markers, "r3") == "r2"
    assert previous_release(markers, "r1") is None
    assert previous_release(markers, "new") == "r3"  # not complete yet: the latest
    assert previous_release(markers, "r3", "r1") == "r1"
    with pytest.raises(ValueError, match="previous release r0 is not a complete release"):
        previous_release(markers, "r3", "r0")


def test_tables_as_files_and_markdown():
    df = derivative_summary(R1)
    back = pd.read_parquet(io.BytesIO(table_bytes(df, "parquet")))
    pd.testing.assert_frame_equal(back, df)
    csv = table_bytes(df, "csv").decode()
    assert csv.splitlines()[0] == "subject,session,pipeline,files,bytes,newest,fingerprint"
    assert "2024-05-03T00:00:00+0000" in csv
    md = markdown_table(df, ["subject", "files"], limit=2)
    assert md.splitlines()[:4] == [
        "| subject | files |",
        "|---|---|",
        "| sub-A | 2 |",
        "| sub-A | 1 |",
    ]
    assert "2 more row(s) not shown" in md
    assert markdown_table(df.iloc[0:0]) == "_(no rows)_"
    with pytest.raises(ValueError, match="xlsx"):
        table_bytes(df, "xlsx")
