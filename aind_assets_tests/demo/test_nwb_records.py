"""Demo NWB files and DocDB records (aind_assets.demo.nwb / records)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest
from pynwb import NWBHDF5IO

from aind_assets.demo.nwb import SAMPLING_RATE, write_demo_nwb
from aind_assets.demo.records import (
    demo_asset_records,
    demo_nwb_files,
    demo_nwb_kwargs,
    write_demo_files,
)

START = datetime(2025, 6, 7, 14, 31, 15, tzinfo=UTC)
BUCKET = "s3://aind-demo-data"


def read(path):
    with NWBHDF5IO(str(path), mode="r") as io:
        nwb = io.read()
        units = nwb.units.to_dataframe() if nwb.units is not None else None
        return nwb.subject.subject_id, nwb.session_start_time, units, nwb.trials.to_dataframe()


def isi_violation_counts(units, threshold_s=0.0015):
    return [int(np.sum(np.diff(np.asarray(t)) < threshold_s)) for t in units["spike_times"]]


def test_nwb_file_holds_units_and_trials(tmp_path):
    path = write_demo_nwb(
        tmp_path / "sub" / "s.nwb", subject_id="741213", session_start=START, seed=7
    )
    assert path.exists() and path.stat().st_size < 100_000
    subject_id, start, units, trials = read(path)
    assert subject_id == "741213" and start == START

    assert len(units) == 8
    for times in units["spike_times"]:
        times = np.asarray(times)
        assert times.size > 20
        assert np.all(np.diff(times) > 0)  # sorted, no duplicates
        assert times.min() >= 0 and times.max() < 40 * 3.0
        np.testing.assert_allclose(times * SAMPLING_RATE, np.round(times * SAMPLING_RATE))
    assert (units["amplitude"] > 0).all()

    # Units 2 and 5 violate the refractory period, the others have a 2 ms dead time.
    violations = isi_violation_counts(units)
    assert [i for i, v in enumerate(violations) if v] == [2, 5]

    assert len(trials) == 40
    for column in (
        "start_time",
        "stop_time",
        "go_cue_time",
        "response_time",
        "reaction_time",
        "stimulus_side",
        "choice",
        "correct",
        "rewarded",
    ):
        assert column in trials.columns
    assert (trials["stop_time"] > trials["start_time"]).all()
    assert set(trials["choice"]) <= {"left", "right", "none"}
    responded = trials["choice"] != "none"
    np.testing.assert_allclose(
        trials.loc[responded, "reaction_time"],
        trials.loc[responded, "response_time"] - trials.loc[responded, "go_cue_time"],
    )
    assert trials.loc[~responded, "reaction_time"].isna().all()
    assert trials["rewarded"].dtype == bool and trials["correct"].dtype == bool
    assert not (trials["rewarded"] & ~trials["correct"]).any()
    assert (trials["correct"] == (trials["choice"] == trials["stimulus_side"])).all()
    assert 0.3 < trials["correct"].mean() < 1.0


def test_nwb_content_is_deterministic_given_seed(tmp_path):
    a = read(write_demo_nwb(tmp_path / "a.nwb", subject_id="1", session_start=START, seed=3))
    b = read(write_demo_nwb(tmp_path / "b.nwb", subject_id="1", session_start=START, seed=3))
    c = read(write_demo_nwb(tmp_path / "c.nwb", subject_id="1", session_start=START, seed=4))
    assert a[2].equals(b[2]) and a[3].equals(b[3])
    assert not a[3].equals(c[3])


def test_behavior_only_nwb_has_no_units(tmp_path):
    path = write_demo_nwb(
        tmp_path / "b.nwb", subject_id="774659", session_start=START, seed=1, n_units=0, n_trials=5
    )
    _, _, units, trials = read(path)
    assert units is None and len(trials) == 5


def test_nwb_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_trials >= 1"):
        write_demo_nwb(tmp_path / "x.nwb", subject_id="1", session_start=START, seed=1, n_trials=0)


def test_records_have_the_aind_shape():
    records = demo_asset_records(bucket_url=BUCKET)
    assert len(records) == 24
    assert len({r["_id"] for r in records}) == 24
    for r in records:
        uuid.UUID(r["_id"])
        uuid.UUID(r["external_links"]["Code Ocean"][0])
        assert r["location"] == f"{BUCKET}/{r['name']}"
        for field in ("created", "last_modified"):
            assert isinstance(r[field], datetime) and r[field].utcoffset().total_seconds() == 0
        assert r["last_modified"] >= r["created"]
        assert r["subject"]["subject_id"] in r["name"]
        dd = r["data_description"]
        assert dd["project_name"] and dd["name"] == r["name"]
        assert r["name"].startswith(dd["input_data_name"] + "_")
        abbreviations = [m["abbreviation"] for m in dd["modalities"]]
        assert all(m["name"] for m in dd["modalities"])
        if r["name"].startswith("ecephys_"):
            assert "_sorted_" in r["name"] and abbreviations == ["ecephys", "behavior"]
        else:
            assert "_processed_" in r["name"] and abbreviations == ["behavior"]
    # Several subjects, several sessions each, some sessions processed twice.
    subjects = Counter(r["subject"]["subject_id"] for r in records)
    assert len(subjects) == 4 and min(subjects.values()) >= 4
    versions = Counter(r["data_description"]["input_data_name"] for r in records)
    assert sum(1 for v in versions.values() if v > 1) >= 3
    assert any(n.startswith("ecephys_") and v > 1 for n, v in versions.items())
    # created/last_modified grow with the list order (for cursor demos).
    assert all(
        a["last_modified"] < b["last_modified"] for a, b in zip(records, records[1:], strict=False)
    )


def test_records_are_deterministic_and_prefix_stable():
    assert demo_asset_records(bucket_url=BUCKET) == demo_asset_records(bucket_url=BUCKET)
    assert demo_asset_records(30, bucket_url=BUCKET)[:24] == demo_asset_records(bucket_url=BUCKET)
    assert demo_asset_records(3, bucket_url=BUCKET, seed=1) != demo_asset_records(
        3, bucket_url=BUCKET
    )
    assert demo_asset_records(0, bucket_url=BUCKET) == []


def test_nwb_file_listing():
    records = demo_asset_records(bucket_url=BUCKET)
    files = demo_nwb_files(records)
    assert set(files) == {r["name"] for r in records}
    counts = Counter(len(v) for v in files.values())
    assert counts[0] >= 1 and counts[2] >= 1 and counts[1] >= 18
    for name, paths in files.items():
        for p in paths:
            assert p.startswith(f"nwb/{name}") and p.endswith(".nwb")
    # The asset without NWB is an ecephys one (the ephys spec shows a skip).
    assert all(n.startswith("ecephys_") for n, v in files.items() if not v)


def test_write_demo_files(tmp_path):
    records = demo_asset_records(6, bucket_url=BUCKET)
    written = write_demo_files(records, tmp_path)
    expected = demo_nwb_files(records)
    for r in records:
        assert [p.relative_to(tmp_path / r["name"]).as_posix() for p in written[r["name"]]] == (
            expected[r["name"]]
        )
    ecephys = next(r for r in records if r["name"].startswith("ecephys_") and written[r["name"]])
    subject_id, start, units, trials = read(written[ecephys["name"]][0])
    assert subject_id == ecephys["subject"]["subject_id"]
    assert start == ecephys["acquisition"]["acquisition_start_time"]
    assert units is not None and len(units) == 8
    behavior = next(r for r in records if r["name"].startswith("behavior_"))
    assert demo_nwb_kwargs(behavior, "nwb/x.nwb")["n_units"] == 0
