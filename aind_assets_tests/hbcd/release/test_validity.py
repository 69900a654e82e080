"""BIDS validity rules of a staged release (pure; bids-validator and the BIDS schema are real)."""

from __future__ import annotations

import json

import pytest

from aind_assets.hbcd.release.validity import (
    bids_path_ok,
    derivative_path_ok,
    files_read,
    validate_release,
)

A = "rawdata/sub-A/ses-V02/"
T1 = "anat/sub-A_ses-V02_run-001_T1w.nii.gz"
BOLD = "func/sub-A_ses-V02_task-rest_run-001_bold.nii.gz"
DERIV = "derivatives/bibsnet/"
GEN = {"Name": "b", "BIDSVersion": "1.9.0", "GeneratedBy": [{"Name": "bibsnet"}]}


def _tree() -> dict[str, str]:
    return {
        "rawdata/dataset_description.json": json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}),
        "rawdata/README": "readme",
        "rawdata/participants.tsv": "participant_id\tsex\nsub-A\tF\n",
        "rawdata/participants.json": "{}",
        "rawdata/sub-A/sub-A_sessions.tsv": "session_id\tage\nses-V02\t10\n",
        A + "sub-A_ses-V02_scans.tsv": f"filename\tacq_time\n{T1}\tn/a\n{BOLD}\tn/a\n",
        A + T1: "",
        A + T1.replace(".nii.gz", ".json"): "{}",
        A + BOLD: "",
        A + BOLD.replace(".nii.gz", ".json"): "{}",
        DERIV + "dataset_description.json": json.dumps(GEN),
        DERIV + "sub-A/ses-V02/anat/sub-A_ses-V02_space-T1w_desc-aseg_dseg.nii.gz": "",
        DERIV + "sub-A/ses-V02/anat/sub-A_ses-V02_space-T1w_desc-brain_mask.nii.gz": "",
    }


def _check(tree: dict[str, str], **kw) -> list[tuple[str, str, str]]:
    def read(path: str) -> str:
        if path not in tree:
            raise FileNotFoundError(path)
        return tree[path]

    return [(p.path, p.rule, p.message) for p in validate_release(list(tree), read, **kw)]


def test_valid_release_has_no_problem():
    assert _check(_tree()) == []


def test_path_checks_are_the_validator_and_the_schema():
    assert bids_path_ok("sub-A/ses-V02/" + T1)
    assert not bids_path_ok("sub-A/ses-V02/anat/sub-A_ses-V02_T1w_bad.nii.gz")
    assert derivative_path_ok("sub-A/ses-V02/anat/sub-A_ses-V02_space-T1w_desc-aseg_dseg.nii.gz")
    assert not derivative_path_ok("sub-A/figures/report.svg")


def test_catches_a_bad_file_name():
    tree = _tree()
    bad = A + "anat/sub-A_ses-V02_run-001_T1w_defaced.nii.gz"
    tree[bad] = ""
    tree[A + "sub-A_ses-V02_scans.tsv"] += "anat/sub-A_ses-V02_run-001_T1w_defaced.nii.gz\tn/a\n"
    assert _check(tree) == [(bad, "bids-path", "not a valid BIDS path (bids-validator)")]


def test_catches_a_scans_row_for_a_missing_file():
    tree = _tree()
    del tree[A + BOLD]
    assert _check(tree) == [
        (A + "sub-A_ses-V02_scans.tsv", "scans", f"line 3: {BOLD} is listed but missing")
    ]


def test_catches_tabular_problems():
    tree = _tree()
    tree["rawdata/participants.tsv"] = "participant_id\nsub-A\nsub-A\nA_2\nsub-B\n"
    tree["rawdata/sub-A/sub-A_sessions.tsv"] = "age\tsession_id\n1\tses-V02\n"
    tree[A + "sub-A_ses-V02_scans.tsv"] = f"filename\n{T1}\n{T1}\n"
    assert sorted(_check(tree)) == sorted(
        [
            ("rawdata/participants.tsv", "participants", "line 3: sub-A listed twice"),
            ("rawdata/participants.tsv", "participants", "line 4: not sub-<alnum>"),
            ("rawdata/participants.tsv", "participants", "line 5: sub-B has no folder"),
            ("rawdata/sub-A/sub-A_sessions.tsv", "tsv", "first column must be 'session_id'"),
            (A + "sub-A_ses-V02_scans.tsv", "scans", f"line 3: {T1} listed twice"),
            (A + "sub-A_ses-V02_scans.tsv", "scans", f"{BOLD} has no row"),
        ]
    )
    tree = _tree()
    tree["rawdata/sub-A/sub-A_sessions.tsv"] = "session_id\nV02\nses-V03\n"
    assert sorted(_check(tree)) == [
        ("rawdata/sub-A/sub-A_sessions.tsv", "sessions", "line 2: not ses-<alnum>"),
        ("rawdata/sub-A/sub-A_sessions.tsv", "sessions", "line 3: ses-V03 has no folder"),
        ("rawdata/sub-A/sub-A_sessions.tsv", "sessions", "ses-V02 has no row"),
    ]


def test_derivative_rules():
    tree = _tree()
    tree[DERIV + "dataset_description.json"] = json.dumps({"Name": "b", "BIDSVersion": "1.9.0"})
    tree[DERIV + "sub-A/figures/sub-A_report.svg"] = ""
    tree[DERIV + "sub-B/ses-V02/anat/sub-B_ses-V02_desc-brain_mask.nii.gz"] = ""
    tree[DERIV + "sub-A/ses-V02/anat/sub-B_ses-V02_desc-brain_mask.nii.gz"] = ""
    got = _check(tree)
    assert sorted(got) == sorted(
        [
            (
                DERIV + "dataset_description.json",
                "dataset-description",
                "derivative dataset without GeneratedBy",
            ),
            (
                DERIV + "sub-A/figures/sub-A_report.svg",
                "bids-path",
                "not a valid BIDS derivative path",
            ),
            (
                DERIV + "sub-B/ses-V02/anat/sub-B_ses-V02_desc-brain_mask.nii.gz",
                "derivative-session",
                "sub-B/ses-V02 is not in rawdata",
            ),
            (
                DERIV + "sub-A/ses-V02/anat/sub-B_ses-V02_desc-brain_mask.nii.gz",
                "bids-path",
                "not a valid BIDS derivative path",
            ),
            (
                DERIV + "sub-A/ses-V02/anat/sub-B_ses-V02_desc-brain_mask.nii.gz",
                "entity-labels",
                "file in sub-A/ses-V02/ is not named sub-A_ses-V02_…",
            ),
        ]
    )
    # ignore patterns: the dataset's .bidsignore and the release spec's
    tree = _tree()
    tree[DERIV + "sub-A/figures/sub-A_report.svg"] = ""
    tree[DERIV + "junk/run.txt"] = ""
    assert len(_check(tree)) == 2
    tree[DERIV + ".bidsignore"] = "figures/\n"
    assert _check(tree, ignore=["derivatives/*/junk/*"]) == []


@pytest.mark.parametrize(
    ("path", "rule"),
    [("extra.txt", "layout"), ("derivatives/loose.json", "layout")],
)
def test_layout(path, rule):
    tree = _tree()
    tree[path] = ""
    assert [r for _, r, _ in _check(tree)] == [rule]


def test_missing_raw_description_and_no_rawdata():
    tree = _tree()
    del tree["rawdata/dataset_description.json"]
    assert _check(tree) == [("rawdata/dataset_description.json", "dataset-description", "missing")]
    assert _check({DERIV + "dataset_description.json": json.dumps(GEN)}) == [
        ("rawdata/", "layout", "no rawdata")
    ]


def test_fieldmaps_must_point_at_released_files():
    tree = _tree()
    epi = "fmap/sub-A_ses-V02_dir-PA_run-001_epi"
    tree[A + f"{epi}.nii.gz"] = ""
    tree[A + "sub-A_ses-V02_scans.tsv"] += f"{epi}.nii.gz\tn/a\n"
    sidecar = A + f"{epi}.json"
    gone = "ses-V02/func/sub-A_ses-V02_task-rest_run-002_bold.nii.gz"
    tree[sidecar] = json.dumps(
        {"IntendedFor": [f"ses-V02/{BOLD}", f"bids::sub-A/ses-V02/{BOLD}", gone]}
    )
    assert _check(tree) == [(sidecar, "intended-for", f"IntendedFor {gone} is not in the release")]
    tree[sidecar] = json.dumps({"IntendedFor": f"bids::sub-A/{gone}"})
    assert _check(tree) == [
        (sidecar, "intended-for", f"IntendedFor bids::sub-A/{gone} is not in the release")
    ]
    tree[sidecar] = json.dumps({"IntendedFor": f"bids:other:sub-A/{gone}"})  # not ours
    assert _check(tree) == []
    tree[sidecar] = "{not json"
    assert _check(tree) == [(sidecar, "json", "not valid JSON")]
    assert sidecar in files_read(tree) and A + BOLD not in files_read(tree)
