"""Behaviour performance from the NWB trials table (pynwb).

For each NWB file (session) of the job: trials, response rate (trials with a choice), accuracy
(correct among responded trials), reward rate, median reaction time and the fraction of left
choices. Sessions with fewer than ``min_trials`` trials are reported but excluded from the
pooled numbers. Writes ``sessions.csv`` and ``behavior_performance.png`` (accuracy over trials,
rolling over ``rolling_window`` trials, one line per session; accuracy per session).

The analysis code (``run``, :func:`canonical_trials`, :func:`session_performance`, ...) is
standalone, in ``code/behavior_performance.py``; this module holds its models and registers it,
in process or, with ``AIND_EXAMPLES_OUT_OF_PROCESS=1``, in its own environment
(:func:`.environments.use_environments`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from aind_assets.analysis.examples.code import behavior_performance as code
from aind_assets.analysis.examples.code.behavior_performance import (
    AIND_COLUMNS,
    AIND_LICKS,
    REQUIRED_COLUMNS,
    canonical_trials,
    from_aind_trials,
    lick_times,
    session_performance,
)
from aind_assets.analysis.examples.environments import run_script
from aind_assets.analysis.models import AnalysisOutputs, AnalysisSpecification
from aind_assets.analysis.registry import register_analysis

__all__ = [
    "AIND_COLUMNS",
    "AIND_LICKS",
    "REQUIRED_COLUMNS",
    "BehaviorPerformanceOutputs",
    "BehaviorPerformanceSpecification",
    "canonical_trials",
    "from_aind_trials",
    "lick_times",
    "run",
    "session_performance",
]


class BehaviorPerformanceSpecification(AnalysisSpecification):
    """Parameters of the behaviour performance analysis."""

    min_trials: int = Field(20, ge=1, description="Sessions with fewer trials are excluded.")
    rolling_window: int = Field(10, ge=1, description="Trials in the rolling accuracy curve.")


class SessionPerformance(BaseModel):
    file: str
    n_trials: int
    n_responded: int
    response_rate: float | None
    accuracy: float | None
    reward_rate: float | None
    median_reaction_time_s: float | None
    left_choice_fraction: float | None
    included: bool


class BehaviorPerformanceOutputs(AnalysisOutputs):
    """Structured results of the behaviour performance analysis."""

    n_sessions: int
    n_included: int
    n_trials: int
    accuracy: float | None
    response_rate: float | None
    reward_rate: float | None
    median_reaction_time_s: float | None
    sessions: list[SessionPerformance] = Field(default_factory=list)


@register_analysis(
    name="behavior_performance",
    version="1.0.0",
    spec=BehaviorPerformanceSpecification,
    outputs=BehaviorPerformanceOutputs,
    run_script=run_script(__name__),
)
def run(
    task: Any, params: BehaviorPerformanceSpecification, ctx: Any
) -> BehaviorPerformanceOutputs:
    """Response rate, accuracy, reward rate and reaction times per session and pooled."""
    return BehaviorPerformanceOutputs.model_validate(code.run(task, params, ctx))
