from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aind_assets.hbcd.formats.tsv import merge_tsv_rows, parse_tsv
from aind_assets.hbcd.release import spec as release_module
from aind_assets.hbcd.release.decisions import SourceFile
from aind_assets.hbcd.release.qc import passes_qc, qc_failures, release_ready_files
from aind_assets.hbcd.release.selection import select_release, texts_needed
from aind_assets.hbcd.release.spec import load_release_spec
from aind_assets.hbcd.release.squash import (
    SquashConflictError,
    release_prefixes,
    squash_derivatives,
)
from aind_assets.hbcd.release.tables import (
    prune_intended_for,
    rebuild_dataset_description,
    rebuild_participants_tsv,
    rebuild_scans_tsv,
    rebuild_sessions_tsv,
)

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
        "QU_motion less_than 2 (got '2')"
    ]
    assert not passes_qc({"HBCD_compliant": "Yes", "QU_motion": "_NaN_"}, CRITERIA)
    assert not passes_qc({"HBCD_compliant": "Yes"}, CRITERIA)  # missing column fails
    assert passes_qc({"q": "3.0"}, {"q": [3, "equals"]})
    # missing values (n/a, _NaN_, _Inf_...) fail every criterion, negative ones included:
    # a file whose QC is unknown is not release-ready
    for missing in ("n/a", "_NaN_", "_Inf_", "nan", ""):
        assert not passes_qc({"q": missing}, {"q": [3, "not_equals"]})
        assert not passes_qc({"q": missing}, {"q": [["A"], "not_in"]})
    assert passes_qc({"q": "4"}, {"q": [3, "not_equals"]})
    assert not passes_qc({"q": "abc"}, {"q": [3, "not_equals"]})  # not a number: unknown
    assert passes_qc({"q": "B"}, {"q": [["A", "B"], "in"]})
    assert passes_qc({"q": "2"}, {"q": [2, "greater_than_or_equal"]})
    with pytest.raises(ValueError, match="unknown QC operator 'about'"):
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
    paths = [
        "ses-V02/bibsnet/sub-R/ses-V02/anat/x.nii.gz",
        "ses-V03/bibsnet/sub-R/ses-V03/anat/x.nii.gz",
        "ses-V02/bibsnet/dataset_description.json",
        "ses-V03/bibsnet/dataset_description.json",
        "ses-V02/cbrain_misc/sub-R_bibsnet_ses-V02.json",
        "loose.txt",
    ]
    # two sources of one path are an error naming both, unless their content is the same
    with pytest.raises(
        SquashConflictError, match="squash conflict: bibsnet/dataset_description"
    ) as e:
        squash_derivatives(paths)
    assert "ses-V02/bibsnet/dataset_description.json" in str(e.value)
    assert "ses-V03/bibsnet/dataset_description.json" in str(e.value)
    with pytest.raises(SquashConflictError, match="with different content"):
        squash_derivatives(paths, same_content=lambda a, b: False)
    plan = squash_derivatives(paths, same_content=lambda a, b: True)
    assert plan.mapping == {
        "bibsnet/sub-R/ses-V02/anat/x.nii.gz": "ses-V02/bibsnet/sub-R/ses-V02/anat/x.nii.gz",
        "bibsnet/sub-R/ses-V03/anat/x.nii.gz": "ses-V03/bibsnet/sub-R/ses-V03/anat/x.nii.gz",
        "bibsnet/dataset_description.json": "ses-V02/bibsnet/dataset_description.json",
    }
    assert plan.duplicates == {
        "bibsnet/dataset_description.json": [
            "ses-V02/bibsnet/dataset_description.json",
            "ses-V03/bibsnet/dataset_description.json",
        ]
    }


def test_release_prefixes():
    assert release_prefixes("r1.0") == ("r1.0/hbcd/rawdata/", "r1.0/hbcd/derivatives/")
    with pytest.raises(ValueError, match="release identifier must be a single path segment"):
        release_prefixes("a/b")


# --- the spec --------------------------------------------------------------------------------
EXAMPLE = Path(release_module.__file__).parent / "examples" / "release.yaml"


def test_example_spec_and_yaml_strings():
    spec = load_release_spec(EXAMPLE.read_text(), str(EXAMPLE))
    assert spec.release == "1.0"
    # YAML 1.1 would read Yes as True: the spec loader keeps it a string
    assert spec.qc.default == {"HBCD_compliant": ("Yes", "equals")}
    assert spec.criteria_for("anat") == {
        "HBCD_compliant": ("Yes", "equals"),
        "QU_motion": (2, "less_than"),
    }
    assert spec.criteria_for("dwi") == {"HBCD_compliant": ("Yes", "equals")}
    assert load_release_spec(spec.to_yaml(), "round trip") == spec


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("release: r1\nqc: {default: {QU_motion: [2, about]}}", "qc.default.QU_motion"),
        ("release: r1\nqc: {modalities: {anat: {QU_motion: [x, less_than]}}}", "needs a number"),
        ("release: r1\nqc: {default: {site: [A, in]}}", "needs a list"),
        ("release: a/b", "release"),
        ("release: r1\nunknown: 1", "unknown"),
        ("release: r1\npipelines: [cbrain_misc]", "pipelines"),
        ("release: r1\nmin_file_age_hours: -1", "min_file_age_hours"),
        ("- just a list", "mapping"),
        ("release: [", "not valid YAML"),
    ],
)
def test_bad_spec_is_a_clear_error(text, needle):
    with pytest.raises(ValueError, match=r"^specs/r1\.yaml: ") as e:
        load_release_spec(text, "specs/r1.yaml")
    assert needle in str(e.value)


# --- selection -------------------------------------------------------------------------------
OLD = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2024, 6, 1, tzinfo=UTC)
R = "assembly_bids"


def _scans(rows):
    return "filename\tHBCD_compliant\tQU_motion\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows)


def _select(
    texts,
    *,
    spec="release: r1\nqc: {default: {HBCD_compliant: [Yes, equals]}}",
    sizes=None,
    young=(),
    extra=(),
):
    sizes = sizes or {}
    files = [
        SourceFile(p, sizes.get(p, len(t)), "etag", NOW if p in young else OLD)
        for p, t in {**texts, **dict.fromkeys(extra, "")}.items()
    ]
    spec = load_release_spec(spec, "test")
    needed = texts_needed(files, spec)
    return {
        (d.kind, d.source or (f"{d.session}/{d.pipeline}" if d.pipeline else d.session)): d
        for d in select_release(spec, files, {k: texts[k] for k in needed if k in texts}, NOW)
    }


def test_session_reasons():
    a = f"{R}/sub-A/ses-V02/"
    texts = {
        f"{R}/participants.tsv": "participant_id\tage\nsub-A\t1\nsub-B\t2\n",
        f"{R}/sub-A/sub-A_sessions.tsv": "session_id\nses-V02\nses-V04\n",
        a + "sub-A_ses-V02_scans.tsv": _scans([("anat/sub-A_ses-V02_T1w.nii.gz", "Yes", "1")]),
        a + "anat/sub-A_ses-V02_T1w.nii.gz": "x",
        # not in sessions.tsv
        f"{R}/sub-A/ses-V03/sub-A_ses-V03_scans.tsv": _scans(
            [("anat/sub-A_ses-V03_T1w.nii.gz", "Yes", "1")]
        ),
        f"{R}/sub-A/ses-V03/anat/sub-A_ses-V03_T1w.nii.gz": "x",
        # files too young
        f"{R}/sub-A/ses-V04/sub-A_ses-V04_scans.tsv": _scans(
            [("anat/sub-A_ses-V04_T1w.nii.gz", "Yes", "1")]
        ),
        f"{R}/sub-A/ses-V04/anat/sub-A_ses-V04_T1w.nii.gz": "x",
        # not in participants.tsv
        f"{R}/sub-Z/ses-V02/sub-Z_ses-V02_scans.tsv": _scans(
            [("anat/sub-Z_ses-V02_T1w.nii.gz", "Yes", "1")]
        ),
        f"{R}/sub-Z/ses-V02/anat/sub-Z_ses-V02_T1w.nii.gz": "x",
        # scans.tsv without filename first
        f"{R}/sub-B/ses-V02/sub-B_ses-V02_scans.tsv": "acq_time\tfilename\n",
        f"{R}/sub-B/ses-V02/anat/sub-B_ses-V02_T1w.nii.gz": "x",
        # no scans.tsv
        f"{R}/sub-B/ses-V03/anat/sub-B_ses-V03_T1w.nii.gz": "x",
        f"{R}/dataset_description.json": '{"Name": "x", "BIDSVersion": "1.9.0"}',
    }
    spec = "release: r1\nmin_file_age_hours: 24\nqc: {default: {HBCD_compliant: [Yes, equals]}}"
    d = _select(texts, spec=spec, young=[f"{R}/sub-A/ses-V04/anat/sub-A_ses-V04_T1w.nii.gz"])
    reason = {k[1]: v.reason for k, v in d.items() if k[0] == "session"}
    assert reason == {
        "sub-A_ses-V02": "",
        "sub-A_ses-V03": "session not in sub-A_sessions.tsv",
        "sub-A_ses-V04": "files modified within 24 h (newest 2024-06-01T00:00:00+00:00)",
        "sub-B_ses-V02": "sub-B_ses-V02_scans.tsv does not have 'filename' as its first column",
        "sub-B_ses-V03": "no sub-B_ses-V03_scans.tsv",
        "sub-Z_ses-V02": "subject not in participants.tsv",
    }
    assert d[("raw", a + "anat/sub-A_ses-V02_T1w.nii.gz")].dest == (
        "rawdata/sub-A/ses-V02/anat/sub-A_ses-V02_T1w.nii.gz"
    )
    assert d[("raw", f"{R}/participants.tsv")].action == "rebuild"
    assert d[("raw", f"{R}/sub-A/sub-A_sessions.tsv")].action == "rebuild"
    # a session label filter
    only_v03 = _select(texts, spec="release: r1\nsessions: [ses-V03]")
    assert only_v03[("session", "sub-A_ses-V02")].reason == "session label not in the release spec"


def test_file_rules_low_qc_used_and_unused():
    a = f"{R}/sub-A/ses-V02/"
    t1, t2, bold = (
        "anat/sub-A_ses-V02_T1w",
        "anat/sub-A_ses-V02_T2w",
        "func/sub-A_ses-V02_task-rest_bold",
    )
    texts = {
        a + "sub-A_ses-V02_scans.tsv": _scans(
            [
                (f"{t1}.nii.gz", "Yes", "1"),
                (f"{t2}.nii.gz", "No", "1"),
                (f"{bold}.nii.gz", "No", "1"),
                ("dwi/sub-A_ses-V02_dwi.nii.gz", "Yes", "1"),
            ]
        ),
        a + "sub-A_ses-V02_scans.json": "{}",
        a + f"{t1}.nii.gz": "x",
        a + f"{t1}.json": "{}",
        a + f"{t2}.nii.gz": "x",
        a + f"{t2}.json": "{}",
        a + f"{bold}.nii.gz": "x",
        a + f"{bold}.json": "{}",
        a + "func/sub-A_ses-V02_task-rest_events.tsv": "onset\n",
        # a data file scans.tsv does not list, with its sidecar
        a + "anat/sub-A_ses-V02_acq-x_T1w.nii.gz": "x",
        a + "anat/sub-A_ses-V02_acq-x_T1w.json": "{}",
        a + "anat/notes.txt": "x",
        f"{R}/derivatives-like.txt": "x",
        "derivatives/ses-V02/cbrain_misc/sub-A_bibsnet_ses-V02.json": json.dumps(
            [{"Key": f"{a}{bold}.nii.gz", "Size": 1}]
        ),
    }
    d = _select(texts)
    got = {k[1][len(a) :]: (v.included, v.reason) for k, v in d.items() if k[1].startswith(a)}
    assert got == {
        "sub-A_ses-V02_scans.tsv": (True, ""),
        "sub-A_ses-V02_scans.json": (True, ""),
        f"{t1}.nii.gz": (True, ""),
        f"{t1}.json": (True, ""),
        f"{t2}.nii.gz": (False, "below QC: HBCD_compliant equals 'Yes' (got 'No')"),
        f"{t2}.json": (False, f"belongs to excluded {t2}.nii.gz"),
        f"{bold}.nii.gz": (
            True,
            "below QC (HBCD_compliant equals 'Yes' (got 'No')) but used by processing (bibsnet)",
        ),
        f"{bold}.json": (True, ""),
        "func/sub-A_ses-V02_task-rest_events.tsv": (True, ""),
        "anat/sub-A_ses-V02_acq-x_T1w.nii.gz": (
            False,
            "data file not listed in scans.tsv (no QC values)",
        ),
        "anat/sub-A_ses-V02_acq-x_T1w.json": (
            False,
            "belongs to a data file not listed in scans.tsv",
        ),
        "anat/notes.txt": (False, "not associated with any file listed in scans.tsv"),
        "dwi/sub-A_ses-V02_dwi.nii.gz": (False, "listed in sub-A_ses-V02_scans.tsv but missing"),
    }
    assert d[("raw", f"{R}/derivatives-like.txt")].included  # top-level files are copied
    # only the inputs of the listed pipelines keep a file below QC
    only = _select(
        texts,
        spec="release: r1\nqc: {default: {HBCD_compliant: [Yes, equals]}}\nkeep_inputs_of: [other]",
    )
    bold_row = only[("raw", a + f"{bold}.nii.gz")]
    assert (bold_row.included, bold_row.reason) == (
        False,
        "below QC: HBCD_compliant equals 'Yes' (got 'No')",
    )


def test_derivative_rules():
    texts = {}
    sizes = {}
    for sub in "ABCD":
        a = f"{R}/sub-{sub}/ses-V02/"
        texts[a + f"sub-{sub}_ses-V02_scans.tsv"] = _scans(
            [(f"anat/sub-{sub}_ses-V02_T1w.nii.gz", "Yes", "1")]
        )
        texts[a + f"anat/sub-{sub}_ses-V02_T1w.nii.gz"] = "x" * 10
        for p in ("bibsnet", "other"):
            texts[
                f"derivatives/ses-V02/{p}/sub-{sub}/ses-V02/anat/sub-{sub}_ses-V02_desc-x_mask.nii.gz"
            ] = "y"
            texts[f"derivatives/ses-V02/{p}/sub-{sub}.html"] = "report"
    gen = json.dumps({"Name": "b", "BIDSVersion": "1.9.0", "GeneratedBy": [{"Name": "bibsnet"}]})
    texts["derivatives/ses-V02/bibsnet/dataset_description.json"] = gen
    texts["derivatives/ses-V02/other/dataset_description.json"] = json.dumps({"Name": "o"})

    def manifest(sub, size=10):
        return json.dumps(
            [
                {
                    "Key": f"s3://b/{R}/sub-{sub}/ses-V02/anat/sub-{sub}_ses-V02_T1w.nii.gz",
                    "Size": size,
                }
            ]
        )

    texts["derivatives/ses-V02/cbrain_misc/sub-A_bibsnet_ses-V02.json"] = manifest("A")
    texts["derivatives/ses-V02/cbrain_misc/sub-B_bibsnet_ses-V02.json"] = manifest(
        "B", size=9
    )  # stale
    texts["derivatives/ses-V02/cbrain_misc/sub-C_other_ses-V02.json"] = manifest("C")
    spec = (
        "release: r1\nqc: {default: {HBCD_compliant: [Yes, equals]}, "
        "pipelines: {bibsnet: {QU_motion: [1, equals]}}}\npipelines: [bibsnet, other]"
    )
    d = _select(texts, spec=spec, sizes=sizes)
    reason = {(v.session, v.pipeline): v.reason for k, v in d.items() if k[0] == "pipeline"}
    assert reason[("sub-A_ses-V02", "bibsnet")] == ""
    assert reason[("sub-B_ses-V02", "bibsnet")].startswith(
        "derivatives are stale: 1 input(s) changed or removed since processing"
    )
    assert reason[("sub-C_ses-V02", "bibsnet")] == (
        "no input manifest for bibsnet: cannot check its inputs"
    )
    assert reason[("sub-A_ses-V02", "other")] == (
        "derivatives/ses-V02/other/dataset_description.json missing or without GeneratedBy"
    )
    mask = d[
        (
            "derivative",
            "derivatives/ses-V02/bibsnet/sub-A/ses-V02/anat/sub-A_ses-V02_desc-x_mask.nii.gz",
        )
    ]
    assert mask.dest == "derivatives/bibsnet/sub-A/ses-V02/anat/sub-A_ses-V02_desc-x_mask.nii.gz"
    html = d[("derivative", "derivatives/ses-V02/bibsnet/sub-A.html")]
    assert (html.included, html.session, html.dest) == (
        True,
        "sub-A_ses-V02",
        "derivatives/bibsnet/sub-A.html",
    )
    assert not d[("derivative", "derivatives/ses-V02/bibsnet/sub-B.html")].included
    desc = d[("derivative", "derivatives/ses-V02/bibsnet/dataset_description.json")]
    assert desc.included and desc.dest == "derivatives/bibsnet/dataset_description.json"
    # cbrain_misc is never released
    assert not any("cbrain_misc" in v.dest for v in d.values())


def test_rebuilt_tables():
    assert rebuild_participants_tsv("participant_id\tsex\nsub-A\tF\nsub-B\tM\n", ["B"]) == (
        "participant_id\tsex\nsub-B\tM\n"
    )
    spec = load_release_spec("release: r9\ndataset_name: HBCD r9", "t")
    desc = json.loads(
        rebuild_dataset_description('{"Name": "x", "BIDSVersion": "1.8.0"}', spec, {"Name": "me"})
    )
    assert desc == {
        "Name": "HBCD r9",
        "BIDSVersion": "1.8.0",
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "me"}],
    }
    with pytest.raises(ValueError, match="assembly_bids/dataset_description.json"):
        rebuild_dataset_description("{", spec, {"Name": "me"})


def test_prune_intended_for_drops_only_targets_left_out():
    bold = "ses-V02/func/sub-A_ses-V02_task-rest_run-001_bold.nii.gz"
    rest = "ses-V02/func/sub-A_ses-V02_task-rest_run-002_bold.nii.gz"
    sidecar = json.dumps(
        {"EchoTime": 0.03, "IntendedFor": [bold, f"bids::sub-A/{bold}", rest], "B0": "x"}
    )
    pruned = json.loads(prune_intended_for(sidecar, "sub-A", {bold}))
    assert pruned == {"EchoTime": 0.03, "IntendedFor": [rest], "B0": "x"}
    assert list(pruned) == ["EchoTime", "IntendedFor", "B0"]  # key order kept
    # every target left out: the key goes; a single string target is handled the same way
    assert json.loads(prune_intended_for(sidecar, "sub-A", {bold, rest})) == {
        "EchoTime": 0.03,
        "B0": "x",
    }
    assert json.loads(prune_intended_for(json.dumps({"IntendedFor": bold}), "sub-A", {bold})) == {}
    # nothing to change: None, so the file is copied byte for byte
    assert prune_intended_for(sidecar, "sub-A", {"ses-V03/func/x_bold.nii.gz"}) is None
    assert prune_intended_for(json.dumps({"EchoTime": 1}), "sub-A", {bold}) is None
    assert prune_intended_for("{broken", "sub-A", {bold}) is None
