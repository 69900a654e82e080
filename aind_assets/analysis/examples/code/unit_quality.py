"""Unit quality, the analysis code: ISI violations and firing rates from the NWB units table.

Standalone: it imports numpy, pandas, pynwb (through ``ctx.nwb``) and matplotlib, never
``aind_assets``, so the same ``run(task, params, ctx)`` runs in the platform's process or in its
own environment (``requirements.txt`` beside it) through ``aind-assets-runtime``. ``task``,
``params`` and ``ctx`` are duck-typed: the platform's or the runtime's objects. The platform's
models (parameters, outputs) and the registration are in ``..unit_quality``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["passing", "run", "unit_metrics"]


def _native(row: Mapping[Hashable, Any]) -> dict[str, Any]:
    """A table row as plain Python values (JSON over Pipes holds no numpy scalars)."""
    return {str(k): v.item() if isinstance(v, np.generic) else v for k, v in row.items()}


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


def passing(metrics: pd.DataFrame, params: Any) -> pd.Series:
    """Units passing the thresholds of ``params`` (``max_isi_violation_ratio``, ``min_spikes``,
    ``min_firing_rate_hz``)."""
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


def _plot(metrics: pd.DataFrame, params: Any, title: str) -> Any:
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


def run(task: Any, params: Any, ctx: Any) -> dict[str, Any]:
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
        what = ", ".join(task.asset_name)
        what = what if len(what) <= 70 else f"{len(task.asset_name)} data assets"
        title = f"Unit quality: {what}\nISI threshold {params.isi_threshold_ms:g} ms"
        ctx.save_figure(_plot(table, params, title), "unit_quality.png")
    n = len(table)
    n_pass = int(table["passed"].sum()) if n else 0
    return dict(
        n_files=len(task.file_location),
        n_units=n,
        n_passing=n_pass,
        passing_fraction=round(n_pass / n, 4) if n else None,
        mean_firing_rate_hz=round(float(table["firing_rate_hz"].mean()), 4) if n else None,
        median_isi_violation_ratio=(
            round(float(table["isi_violation_ratio"].median()), 6) if n else None
        ),
        passing_units=[f"{r.file}#{r.unit_id}" for r in table.itertuples() if r.passed],
        units=[_native(r) for r in table.to_dict(orient="records")],
        files_without_units=no_units,
    )
