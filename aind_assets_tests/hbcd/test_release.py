from __future__ import annotations

import pytest

from aind_assets.hbcd.release import (
    passes_qc,
    qc_failures,
    rebuild_scans_tsv,
    rebuild_sessions_tsv,
    release_prefixes,
    release_ready_files,
    squash_derivatives,
)
from aind_assets.hbcd.tsv import merge_tsv_rows, parse_tsv

CRITERIA = {"HBCD_compliant": ["Yes", "equals"], "QU_motion": [2, "less_than"]}
SCANS = (
    "filename\tacq_time\tHBCD_compliant\tQU_motion\n"
    "anat/a_T1w.nii.gz\t2024-01-01T10:00:00\tYes\t1\n"
    "func/a_bold.nii.gz\t2024-01-01T10:10:00\tYes\t2\n"
    "fmap/a_epi.nii.gz\t2024-01-01T10:20:00\tYes\t_NaN_\n"
    "anat/a_T2w.nii.gz\t2024-01-01T10:30:00\tNo\t1\n"
)


def test_qc_criteria():
    assert passes_qc({"HBCD_compliant": "Yes", "QU_motion": "1"}, CRITERIA)
    assert qc_failures({"HBCD_compliant": "Yes", "QU_motion": "2"}, CRITERIA) == [
        "QU_motion less_than 2"
    ]
    assert not passes_qc({"HBCD_compliant": "Yes", "QU_motion": "_NaN_"}, CRITERIA)
    assert not passes_qc({"HBCD_compliant": "Yes"}, CRITERIA)  # missing column fails
    assert passes_qc({"q": "3.0"}, {"q": [3, "equals"]})
    assert passes_qc({"q": "n/a"}, {"q": [3, "not_equals"]})
    assert passes_qc({"q": "B"}, {"q": [["A", "B"], "in"]})
    assert passes_qc({"q": "2"}, {"q": [2, "greater_than_or_equal"]})
    with pytest.raises(ValueError):
        passes_qc({"q": "1"}, {"q": [1, "about"]})


def test_release_ready_and_rebuilt_scans():
    ready = release_ready_files(SCANS, CRITERIA)
    assert ready == ["anat/a_T1w.nii.gz"]
    rebuilt = rebuild_scans_tsv(SCANS, ready)
    assert rebuilt == (
        "filename\tacq_time\tHBCD_compliant\tQU_motion\n"
        "anat/a_T1w.nii.gz\t2024-01-01T10:00:00\tYes\t1\n"
    )


def test_rebuild_sessions():
    text = "session_id\tage\nses-V02\t12\nses-V03\t200\n"
    assert rebuild_sessions_tsv(text, ["V03"]) == "session_id\tage\nses-V03\t200\n"


def test_merge_tsv_rows_keeps_strings():
    existing = "participant_id\tsite\tage\nsub-A\tsite01\t3\nsub-B\tsite02\tn/a\n"
    new = "participant_id\tsite\tsex\nsub-B\tsite02\tF\nsub-C\tsite01\tM\n"
    merged = parse_tsv(merge_tsv_rows(existing, new, "participant_id"))
    assert merged.columns == ["participant_id", "site", "age", "sex"]
    assert [list(r.values()) for r in merged.rows] == [
        ["sub-A", "site01", "3", "n/a"],
        ["sub-B", "site02", "n/a", "F"],
        ["sub-C", "site01", "n/a", "M"],
    ]
    assert merge_tsv_rows(None, new, "participant_id") == new


def test_squash_derivatives():
    plan = squash_derivatives(
        [
            "ses-V02/bibsnet/sub-R/ses-V02/anat/x.nii.gz",
            "ses-V03/bibsnet/sub-R/ses-V03/anat/x.nii.gz",
            "ses-V02/bibsnet/dataset_description.json",
            "ses-V03/bibsnet/dataset_description.json",
            "ses-V02/cbrain_misc/sub-R_bibsnet_ses-V02.json",
            "loose.txt",
        ]
    )
    assert plan.mapping == {
        "bibsnet/sub-R/ses-V02/anat/x.nii.gz": "ses-V02/bibsnet/sub-R/ses-V02/anat/x.nii.gz",
        "bibsnet/sub-R/ses-V03/anat/x.nii.gz": "ses-V03/bibsnet/sub-R/ses-V03/anat/x.nii.gz",
        "bibsnet/dataset_description.json": "ses-V03/bibsnet/dataset_description.json",
    }
    assert plan.duplicates == {
        "bibsnet/dataset_description.json": [
            "ses-V02/bibsnet/dataset_description.json",
            "ses-V03/bibsnet/dataset_description.json",
        ]
    }


def test_release_prefixes():
    assert release_prefixes("r1.0") == ("r1.0/hbcd/rawdata/", "r1.0/hbcd/derivatives/")
    with pytest.raises(ValueError):
        release_prefixes("a/b")
