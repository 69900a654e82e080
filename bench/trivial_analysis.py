"""A trivial analysis for bench/runs_at_scale.py: it counts its files and writes one small
result file, so a run measures the platform's work around a job, not the job.

Registered on import (``AIND_ANALYSIS_MODULES=bench.trivial_analysis``).
"""

from __future__ import annotations

from aind_assets.analysis.models import AnalysisOutputs, AnalysisSpecification
from aind_assets.analysis.registry import register_analysis

NAME = "bench_trivial"


class TrivialSpec(AnalysisSpecification):
    scale: float = 1.0


class TrivialOutputs(AnalysisOutputs):
    n_files: int


@register_analysis(name=NAME, version="1", spec=TrivialSpec, outputs=TrivialOutputs)
def run(task, params: TrivialSpec, ctx) -> TrivialOutputs:  # noqa: ANN001 - the analysis API
    n = len(task.file_location or [])
    (ctx.results_dir / "count.txt").write_text(f"{n * params.scale}\n")
    return TrivialOutputs(n_files=n)
