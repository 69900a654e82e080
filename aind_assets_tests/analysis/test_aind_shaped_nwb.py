"""The two packaged analyses on NWB files shaped like AIND's published ones (written with
hdmf-zarr, as AIND publishes them): dynamic-foraging trials and licks, ecephys units with
SpikeInterface quality-metric columns; a missing column fails naming it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hdmf_zarr import NWBZarrIO
from pynwb import NWBFile
from pynwb.misc import TimeSeries

from aind_assets.analysis.examples import behavior_performance, unit_quality
from aind_assets.analysis.models import AnalysisDispatchModel
from aind_assets.analysis.registry import REGISTRY, load_analyses
from aind_assets.analysis.wrapper import AnalysisContext

N_TRIALS = 40


def foraging_nwb(drop: str | None = None) -> NWBFile:
    nwb = NWBFile(
        session_description="Dynamic foraging",
        identifier="behavior_774659_2025-06-03_16-20-38",
        session_start_time=datetime(2025, 6, 3, 16, 20, 38, tzinfo=UTC),
    )
    rng = np.random.default_rng(1)
    columns = {
        "animal_response": rng.choice([0, 1, 2], N_TRIALS, p=[0.45, 0.45, 0.1]).astype(float),
        "rewarded_historyL": rng.random(N_TRIALS) < 0.3,
        "rewarded_historyR": rng.random(N_TRIALS) < 0.3,
        "reward_probabilityL": np.repeat([0.8, 0.1], N_TRIALS // 2),
        "reward_probabilityR": np.repeat([0.1, 0.8], N_TRIALS // 2),
        "goCue_start_time": np.arange(N_TRIALS) * 5.0 + 1.0,
        "bait_left": np.zeros(N_TRIALS, bool),
    }
    for name in columns:
        if name != drop:
            nwb.add_trial_column(name=name, description=name)
    for i in range(N_TRIALS):
        values = {k: v[i] for k, v in columns.items() if k != drop}
        nwb.add_trial(start_time=i * 5.0, stop_time=i * 5.0 + 4.5, **values)
    licks = np.arange(N_TRIALS) * 5.0 + 1.3
    nwb.add_acquisition(
        TimeSeries(name="left_lick_time", data=np.ones(N_TRIALS), unit="a.u.", timestamps=licks)
    )
    return nwb


def ecephys_nwb() -> NWBFile:
    nwb = NWBFile(
        session_description="ecephys",
        identifier="ecephys_741213_2025-06-02_14-16-20",
        session_start_time=datetime(2025, 6, 2, 14, 16, 20, tzinfo=UTC),
    )
    for name in ("isi_violations_ratio", "firing_rate", "presence_ratio", "default_qc"):
        nwb.add_unit_column(name=name, description=name)
    rng = np.random.default_rng(2)
    for _ in range(4):
        nwb.add_unit(
            spike_times=np.sort(rng.uniform(0, 60, 300)),
            isi_violations_ratio=0.1,
            firing_rate=5.0,
            presence_ratio=0.99,
            default_qc=True,
        )
    return nwb


def write(nwb: NWBFile, path: Path) -> str:
    with NWBZarrIO(str(path), mode="w") as io:
        io.write(nwb)
    return str(path)


def run(name: str, url: str, store, tmp_path: Path) -> dict:
    """The analysis' run function on one file, as run_job calls it."""
    load_analyses()
    definition = REGISTRY.get(name)
    task = AnalysisDispatchModel(
        s3_location=[str(Path(url).parent)],
        asset_name=["a"],
        docdb_record_id=["1"],
        file_location=[url],
    )
    code = definition.job_code(task, {"min_trials": 10, "min_spikes": 10})
    params = definition.validate_parameters(code.parameters.model_dump())
    results = tmp_path / f"results-{name}"
    results.mkdir()
    ctx = AnalysisContext(store=store, results_dir=results, task=task, analysis=name)
    return definition.run(task, params, ctx).model_dump()


def test_behavior_performance_on_aind_foraging_trials(local_store, tmp_path):
    url = write(foraging_nwb(), tmp_path / "behavior.nwb")
    out = run("behavior_performance", url, local_store, tmp_path)
    assert out["n_sessions"] == 1 and out["n_trials"] == N_TRIALS
    assert 0 < out["response_rate"] <= 1 and 0 <= out["accuracy"] <= 1
    assert out["median_reaction_time_s"] == pytest.approx(0.3)


def test_unit_quality_on_aind_units(local_store, tmp_path):
    url = write(ecephys_nwb(), tmp_path / "ecephys.nwb")
    out = run("unit_quality", url, local_store, tmp_path)
    assert out["n_units"] == 4


def test_a_missing_column_is_named(local_store, tmp_path):
    url = write(foraging_nwb(drop="reward_probabilityR"), tmp_path / "behavior.nwb")
    with pytest.raises(ValueError, match="lacks column.s. reward_probabilityR"):
        run("behavior_performance", url, local_store, tmp_path)


def test_canonical_trials_keeps_the_demo_layout():
    import pandas as pd

    demo = pd.DataFrame(
        {"choice": ["left"], "correct": [True], "rewarded": [True], "reaction_time": [0.2]}
    )
    assert behavior_performance.canonical_trials(demo) is demo
    assert unit_quality.UnitQualitySpecification(analysis_name="x").min_spikes >= 0
