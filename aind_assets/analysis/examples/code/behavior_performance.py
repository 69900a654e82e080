"""Behaviour performance, the analysis code: performance from the NWB trials table.

Standalone: it imports numpy, pandas, pynwb (through ``ctx.nwb``) and matplotlib, never
``aind_assets``, so the same ``run(task, params, ctx)`` runs in the platform's process or in its
own environment (``requirements.txt`` beside it) through ``aind-assets-runtime``. ``task``,
``params`` and ``ctx`` are duck-typed: the platform's or the runtime's objects. The platform's
models (parameters, outputs) and the registration are in ``..behavior_performance``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "canonical_trials",
    "from_aind_trials",
    "lick_times",
    "run",
    "session_performance",
]

REQUIRED_COLUMNS = ("choice", "correct", "rewarded", "reaction_time")
#: The trials columns of AIND's dynamic-foraging NWB files that this analysis reads.
AIND_COLUMNS = (
    "animal_response",  # 0 left, 1 right, 2 no response
    "rewarded_historyL",
    "rewarded_historyR",
    "reward_probabilityL",
    "reward_probabilityR",
    "goCue_start_time",
)
#: Acquisition time series of AIND's files holding lick times (for reaction times; optional).
AIND_LICKS = ("left_lick_time", "right_lick_time")


def from_aind_trials(trials: pd.DataFrame, licks: np.ndarray | None = None) -> pd.DataFrame:
    """AIND's dynamic-foraging trials table as this analysis' columns.

    ``choice`` from ``animal_response``; ``rewarded`` = ``rewarded_historyL`` or ``R``;
    ``correct`` = the chosen side had the higher (or equal) reward probability; ``reaction_time``
    = first lick (``licks``: the ``left_lick_time`` and ``right_lick_time`` timestamps) after
    ``goCue_start_time`` within the trial, NaN without licks. A missing column raises
    ``ValueError`` naming it.
    """
    missing = [c for c in AIND_COLUMNS if c not in trials.columns]
    if missing:
        raise ValueError(
            f"the trials table lacks column(s) {', '.join(missing)} (AIND dynamic-foraging "
            f"layout: {', '.join(AIND_COLUMNS)}; or give {', '.join(REQUIRED_COLUMNS)})"
        )
    response = pd.to_numeric(trials["animal_response"], errors="coerce")
    choice = response.map({0: "left", 1: "right"}).fillna("none")
    p_left = pd.to_numeric(trials["reward_probabilityL"], errors="coerce")
    p_right = pd.to_numeric(trials["reward_probabilityR"], errors="coerce")
    correct = ((choice == "left") & (p_left >= p_right)) | (
        (choice == "right") & (p_right >= p_left)
    )
    rewarded = trials["rewarded_historyL"].astype(bool) | trials["rewarded_historyR"].astype(bool)
    go = pd.to_numeric(trials["goCue_start_time"], errors="coerce").to_numpy()
    reaction = np.full(len(trials), np.nan)
    if licks is not None and len(licks):
        ends = np.append(go[1:], np.inf)
        first = np.searchsorted(licks, go)
        for i, j in enumerate(first):
            if j < len(licks) and licks[j] < ends[i] and choice.iloc[i] != "none":
                reaction[i] = licks[j] - go[i]
    return pd.DataFrame(
        {"choice": choice, "correct": correct, "rewarded": rewarded, "reaction_time": reaction},
        index=trials.index,
    )


def canonical_trials(trials: pd.DataFrame, licks: np.ndarray | None = None) -> pd.DataFrame:
    """The trials as :data:`REQUIRED_COLUMNS`: as they are when they have them (the demo
    layout), else from AIND's dynamic-foraging layout (:func:`from_aind_trials`)."""
    if all(c in trials.columns for c in REQUIRED_COLUMNS):
        return trials
    return from_aind_trials(trials, licks)


def lick_times(nwb: Any) -> np.ndarray | None:
    """Sorted lick timestamps of an AIND NWB file (``left_lick_time``/``right_lick_time``)."""
    found = [
        np.asarray(nwb.acquisition[name].timestamps[:], dtype=float)
        for name in AIND_LICKS
        if name in nwb.acquisition
    ]
    return np.sort(np.concatenate(found)) if found else None


def _rate(num: float, den: float) -> float | None:
    return round(float(num) / float(den), 4) if den else None


def session_performance(trials: pd.DataFrame) -> dict[str, Any]:
    """Performance numbers of one trials table (columns :data:`REQUIRED_COLUMNS`)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in trials.columns]
    if missing:
        raise ValueError(f"the trials table lacks column(s) {', '.join(missing)}")
    responded = trials["choice"].astype(str) != "none"
    n, n_resp = len(trials), int(responded.sum())
    rt = pd.to_numeric(trials.loc[responded, "reaction_time"], errors="coerce").dropna()
    return {
        "n_trials": n,
        "n_responded": n_resp,
        "response_rate": _rate(n_resp, n),
        "accuracy": _rate(trials.loc[responded, "correct"].astype(bool).sum(), n_resp),
        "reward_rate": _rate(trials["rewarded"].astype(bool).sum(), n),
        "median_reaction_time_s": round(float(rt.median()), 4) if len(rt) else None,
        "left_choice_fraction": _rate((trials.loc[responded, "choice"] == "left").sum(), n_resp),
    }


def short_labels(names: list[str]) -> list[str]:
    """Labels telling files apart: their names without the extension and without the prefix
    they all share (``behavior_774659_2024-05-01_10-00-00.nwb`` -> ``2024-05-01_10-00-00``)."""
    stems = [n.rsplit(".", 1)[0] if "." in n else n for n in names]
    if len(stems) > 1:
        common = os.path.commonprefix(stems)
        cut = common.rfind("_") + 1  # AIND names: fields joined by "_", "-" inside dates
        stems = [s[cut:] or s for s in stems]
    return [s if len(s) <= 24 else f"{s[:11]}…{s[-12:]}" for s in stems]


def group_title(group: dict[str, Any]) -> str:
    """``{"subject__subject_id": "774659"}`` -> ``subject id 774659`` (the field's last part)."""
    return ", ".join(f"{k.split('__')[-1].replace('_', ' ')} {v}" for k, v in group.items())


def _plot(curves: dict[str, pd.Series], sessions: list[dict[str, Any]], title: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.5))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    for label, curve in zip(short_labels(list(curves)), curves.values(), strict=True):
        left.plot(np.arange(1, len(curve) + 1), curve.to_numpy(), label=label)
    left.axhline(0.5, color="grey", linestyle=":")
    left.set_ylim(0, 1.05)
    left.set_xlabel("trial")
    left.set_ylabel("rolling accuracy")
    if len(curves) <= 6:
        left.legend(fontsize=6)
    names = short_labels([s["file"] for s in sessions])
    values = [s["accuracy"] or 0.0 for s in sessions]
    colors = ["tab:blue" if s["included"] else "lightgrey" for s in sessions]
    right.bar(range(len(values)), values, color=colors)
    right.set_xticks(range(len(values)), names, rotation=60, fontsize=6, ha="right")
    right.set_ylim(0, 1.05)
    right.set_ylabel("accuracy")
    right.set_xlabel("session")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def run(task: Any, params: Any, ctx: Any) -> dict[str, Any]:
    """Response rate, accuracy, reward rate and reaction times per session and pooled."""
    if not task.file_location:
        raise ValueError(
            "behavior_performance reads NWB files: give its dispatch spec file_extension: .nwb"
        )
    sessions: list[dict[str, Any]] = []
    curves: dict[str, pd.Series] = {}
    pooled: list[pd.DataFrame] = []
    for url in task.file_location:
        name = url.rsplit("/", 1)[-1]
        with ctx.nwb(url) as nwb:
            if nwb.trials is None or len(nwb.trials) == 0:
                ctx.log.warning("%s has no trials table: skipped", url)
                continue
            raw = nwb.trials.to_dataframe()
            licks = lick_times(nwb)
        try:
            trials = canonical_trials(raw, licks)
            numbers = session_performance(trials)
        except ValueError as exc:
            raise ValueError(f"{url}: {exc}") from exc
        included = numbers["n_trials"] >= params.min_trials
        sessions.append({"file": name, **numbers, "included": bool(included)})
        responded = trials["choice"].astype(str) != "none"
        outcome = (trials["correct"].astype(bool) & responded).astype(float)
        curves[name] = outcome.rolling(params.rolling_window, min_periods=1).mean()
        if included:
            pooled.append(trials)
    table = pd.DataFrame(sessions)
    table.to_csv(ctx.results_dir / "sessions.csv", index=False)
    overall = session_performance(pd.concat(pooled, ignore_index=True)) if pooled else {}
    if sessions:
        title = ", ".join(sorted({*task.asset_name}))
        if task.group_metadata:
            title = f"{group_title(dict(task.group_metadata))} ({len(sessions)} session(s))"
        elif len(title) > 90:
            title = f"{len(task.asset_name)} data assets"
        title = f"Behavior performance: {title}"
        ctx.save_figure(_plot(curves, sessions, title), "behavior_performance.png")
    return dict(
        n_sessions=len(sessions),
        n_included=len(pooled),
        n_trials=int(overall.get("n_trials", 0)),
        accuracy=overall.get("accuracy"),
        response_rate=overall.get("response_rate"),
        reward_rate=overall.get("reward_rate"),
        median_reaction_time_s=overall.get("median_reaction_time_s"),
        sessions=sessions,
    )
