"""Registers ``old_numpy_stats``: its code (old_numpy.py) needs numpy 1.x and runs only in its
own environment (requirements.txt, Python 3.12); the platform imports only these models."""

from pathlib import Path

from aind_assets.analysis.environments import AnalysisEnvironment
from aind_assets.analysis.models import AnalysisOutputs, AnalysisSpecification
from aind_assets.analysis.registry import REGISTRY, register_external_analysis

HERE = Path(__file__).resolve().parent
NAME = "old_numpy_stats"
MEMORY_LIMIT_MB = 1024

ENVIRONMENT = AnalysisEnvironment(
    entrypoint="old_numpy:run",
    requirements=HERE / "requirements.txt",
    python="3.12",
    paths=(HERE,),
    memory_limit_mb=MEMORY_LIMIT_MB,
    env={"OPENBLAS_NUM_THREADS": "1"},
)


class OldNumpySpec(AnalysisSpecification):
    mode: str = "ok"
    scale: float = 1.0
    hog_mb: int = 2 * MEMORY_LIMIT_MB
    sleep_s: float = 600.0


class OldNumpyOutputs(AnalysisOutputs):
    numpy_version: str
    n_files: int


if NAME not in REGISTRY:
    register_external_analysis(
        name=NAME,
        version="1.0.0",
        spec=OldNumpySpec,
        outputs=OldNumpyOutputs,
        environment=ENVIRONMENT,
        description="numpy 1.x statistics in their own environment",
    )
