"""The analysis-side runtime of aind-assets: what an analysis running in its own environment
imports. It depends on pydantic and dagster-pipes only; pynwb, h5py and fsspec/s3fs are imported
when a job reads NWB files or an object store.

The platform starts ``python -m aind_assets_runtime`` in the analysis' environment through
Dagster Pipes; the worker reads the jobs, calls the analysis' run function
``run(task, params, ctx)`` exactly as the platform does in process, and reports each job's
outputs (or its error and traceback) back over Pipes.
"""

from aind_assets_runtime.context import (
    AnalysisContext,
    AnalysisInputError,
    DispatchTask,
    Parameters,
)

__version__ = "0.1.0"

__all__ = [
    "AnalysisContext",
    "AnalysisInputError",
    "DispatchTask",
    "Parameters",
    "__version__",
]
