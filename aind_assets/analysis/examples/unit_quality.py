"""Unit quality: ISI violations and firing rates from the NWB units table (pynwb).

For each unit of each NWB file of the job: the number of spikes, the firing rate over the
session, the inter-spike intervals (ISIs) shorter than ``isi_threshold_ms`` (refractory-period
violations) and their fraction of all ISIs. A unit passes when its violation ratio is at most
``max_isi_violation_ratio``, it has at least ``min_spikes`` spikes and fires at least
``min_firing_rate_hz``. Writes ``unit_metrics.csv`` and ``unit_quality.png`` (firing rate against
violation ratio, threshold drawn, passing units coloured).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from aind_assets.analysis.models import (
    AnalysisDispatchModel,
    AnalysisOutputs,
    AnalysisSpecification,
)
from aind_assets.analysis.registry import register_analysis
from aind_assets.analysis.wrapper import AnalysisContext

__all__ = [
    "UnitQualityOutputs",
    "UnitQualitySpecification",
    "passing",
    "run",
    "unit_metrics",
]


class UnitQualitySpecification(AnalysisSpecification):
    """Parameters of the unit quality analysis."""

    isi_threshold_ms: float = Field(
        1.5, gt=0, description="ISIs shorter than this (ms) are refractory-period violations."
    )
    max_isi_violation_ratio: float = Field(
        0.01, ge=0, le=1, description="A unit passes with at most this fraction of violating ISIs."
    )
    min_spikes: int = Field(50, ge=0, description="A unit needs at least this many spikes.")
    min_firing_rate_hz: float = Field(0.1, ge=0, description="Minimum firing rate (Hz).")


class UnitRow(BaseModel):
    file: str
    unit_id: int
    n_spikes: int
    firing_rate_hz: float
    isi_violations: int
    isi_violation_ratio: float
    passed: bool


class UnitQualityOutputs(AnalysisOutputs):
    """Structured results of the unit quality analysis."""

    n_files: int
    n_units: int
    n_passing: int
    passing_fraction: float | None
    mean_firing_rate_hz: float | None
    median_isi_violation_ratio: float | None
    passing_units: list[str] = Field(default_factory=list, description="<file>#<unit id>")
    units: list[UnitRow] = Field(default_factory=list)
    files_without_units: list[str] = Field(default_factory=list)


def unit_metrics(
    spike_trains: Sequence[np.ndarray],
    unit_ids: Sequence[int],
    duration_s: float,
    isi_threshold_ms: float,
) -> pd.DataFrame:
    """Per unit: ``n_spikes``, ``firing_rate_hz``, ``isi_violations`` and ``isi_violation_ratio``
    (violating ISIs / all ISIs; 0 for units with fewer than two spikes)."""
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    threshold = isi_threshold_ms / 1000.0
    rows = []
    for unit_id, train in zip(unit_ids, spike_trains, strict=True):
        times = np.sort(np.asarray(train, dtype=float))
        isis = np.diff(times)
        violations = int(np.count_nonzero(isis < threshold))
        rows.append(
            {
                "unit_id": int(unit_id),
                "n_spikes": int(times.size),
                "firing_rate_hz": float(times.size / duration_s),
                "isi_violations": violations,
                "isi_violation_ratio": float(violations / isis.size) if isis.size else 0.0,
            }
        )
    return pd.DataFrame(
        rows,
        columns=["unit_id", "n_spikes", "firing_rate_hz", "isi_violations", "isi_violation_ratio"],
    )


def passing(metrics: pd.DataFrame, params: UnitQualitySpecification) -> pd.Series:
    return (
        (metrics["isi_violation_ratio"] <= params.max_isi_violation_ratio)
        & (metrics["n_spikes"] >= params.min_spikes)
        & (metrics["firing_rate_hz"] >= params.min_firing_rate_hz)
    )


def _session_duration(nwb: Any, trains: Sequence[np.ndarray]) -> float:
    ends = [float(np.max(t)) for t in trains if len(t)]
    if nwb.trials is not None and len(nwb.trials):
        ends.append(float(np.max(nwb.trials["stop_time"][:])))
    return max(ends) if ends else 0.0


def _plot(metrics: pd.DataFrame, params: UnitQualitySpecification, title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ok = metrics["passed"]
    ax.scatter(
        metrics.loc[ok, "firing_rate_hz"],
        metrics.loc[ok, "isi_violation_ratio"] * 100,
        c="tab:green",
        label=f"pass ({int(ok.sum())})",
    )
    ax.scatter(
        metrics.loc[~ok, "firing_rate_hz"],
        metrics.loc[~ok, "isi_violation_ratio"] * 100,
        c="tab:red",
        marker="x",
        label=f"fail ({int((~ok).sum())})",
    )
    ax.axhline(params.max_isi_violation_ratio * 100, color="grey", linestyle="--", label="max")
    ax.set_xlabel("firing rate (Hz)")
    ax.set_ylabel(f"ISIs < {params.isi_threshold_ms:g} ms (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return fig


@register_analysis(
    name="unit_quality",
    version="1.0.0",
    spec=UnitQualitySpecification,
    outputs=UnitQualityOutputs,
)
def run(
    task: AnalysisDispatchModel, params: UnitQualitySpecification, ctx: AnalysisContext
) -> UnitQualityOutputs:
    """ISI violations and firing rates of the units of each NWB file, filtered by thresholds."""
    if not task.file_location:
        raise ValueError(
            "unit_quality reads NWB files: give its dispatch spec file_extension: .nwb"
        )
    frames, no_units = [], []
    for url in task.file_location:
        name = url.rsplit("/", 1)[-1]
        with ctx.nwb(url) as nwb:
            if nwb.units is None or len(nwb.units) == 0:
                ctx.log.warning("%s has no units table: no units to assess", url)
                no_units.append(url)
                continue
            if "spike_times" not in nwb.units.colnames:
                raise ValueError(
                    f"{url}: the units table has no spike_times column (columns: "
                    f"{', '.join(nwb.units.colnames)})"
                )
            ids = [int(i) for i in nwb.units.id[:]]
            trains = [np.asarray(nwb.units["spike_times"][i]) for i in range(len(ids))]
            duration = _session_duration(nwb, trains)
        metrics = unit_metrics(trains, ids, duration, params.isi_threshold_ms)
        metrics.insert(0, "file", name)
        frames.append(metrics)
    columns = [
        "file",
        "unit_id",
        "n_spikes",
        "firing_rate_hz",
        "isi_violations",
        "isi_violation_ratio",
    ]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    table["passed"] = passing(table, params).astype(bool) if len(table) else []
    table.to_csv(ctx.results_dir / "unit_metrics.csv", index=False)
    if len(table):
        title = f"{', '.join(task.asset_name)}\nISI threshold {params.isi_threshold_ms:g} ms"
        ctx.save_figure(_plot(table, params, title), "unit_quality.png")
    n = len(table)
    n_pass = int(table["passed"].sum()) if n else 0
    return UnitQualityOutputs(
        n_files=len(task.file_location),
        n_units=n,
        n_passing=n_pass,
        passing_fraction=round(n_pass / n, 4) if n else None,
        mean_firing_rate_hz=round(float(table["firing_rate_hz"].mean()), 4) if n else None,
        median_isi_violation_ratio=(
            round(float(table["isi_violation_ratio"].median()), 6) if n else None
        ),
        passing_units=[f"{r.file}#{r.unit_id}" for r in table.itertuples() if r.passed],
        units=[UnitRow.model_validate(r) for r in table.to_dict(orient="records")],
        files_without_units=no_units,
    )
