"""Unit quality: ISI violations and firing rates from the NWB units table (pynwb).

For each unit of each NWB file of the job: the number of spikes, the firing rate over the
session, the inter-spike intervals (ISIs) shorter than ``isi_threshold_ms`` (refractory-period
violations) and their fraction of all ISIs. A unit passes when its violation ratio is at most
``max_isi_violation_ratio``, it has at least ``min_spikes`` spikes and fires at least
``min_firing_rate_hz``. Writes ``unit_metrics.csv`` and ``unit_quality.png`` (firing rate against
violation ratio, threshold drawn, passing units coloured).

The analysis code (``run``, :func:`unit_metrics`, :func:`passing`) is standalone, in
``code/unit_quality.py``; this module holds its models and registers it, in process or, with
``AIND_EXAMPLES_OUT_OF_PROCESS=1``, in its own environment
(:func:`.environments.use_environments`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from aind_assets.analysis.examples.code import unit_quality as code
from aind_assets.analysis.examples.code.unit_quality import passing, unit_metrics
from aind_assets.analysis.examples.environments import run_script
from aind_assets.analysis.models import AnalysisOutputs, AnalysisSpecification
from aind_assets.analysis.registry import register_analysis

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


@register_analysis(
    name="unit_quality",
    version="1.0.0",
    spec=UnitQualitySpecification,
    outputs=UnitQualityOutputs,
    run_script=run_script(__name__),
)
def run(task: Any, params: UnitQualitySpecification, ctx: Any) -> UnitQualityOutputs:
    """ISI violations and firing rates of the units of each NWB file, filtered by thresholds."""
    return UnitQualityOutputs.model_validate(code.run(task, params, ctx))
