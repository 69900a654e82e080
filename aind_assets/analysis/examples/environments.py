"""Where the packaged analyses run: in process (the default) or, with
``AIND_EXAMPLES_OUT_OF_PROCESS=1`` (:func:`aind_assets.settings.examples_out_of_process`, passed
to :func:`~aind_assets.analysis.registry.load_analyses` by the Dagster definitions, the resource
and the command line), in their own environment through Dagster Pipes: ``code/requirements.txt`` (pinned to the
platform's versions) plus ``aind-assets-runtime[nwb,s3]``, with ``code/`` on ``PYTHONPATH``.

The job's ``Code`` is the same in both modes but for the environment it records (``container``,
``language``, ``language_version``): ``run_script`` is the registering module's path either way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from aind_assets.analysis.environments import AnalysisEnvironment
from aind_assets.analysis.registry import AnalysisRegistry

__all__ = ["CODE_DIR", "EXAMPLES", "REQUIREMENTS", "environment", "run_script", "use_environments"]

#: The packaged analyses (module ``code/<name>.py`` each).
EXAMPLES = ("behavior_performance", "unit_quality")

CODE_DIR = Path(__file__).resolve().parent / "code"
REQUIREMENTS = CODE_DIR / "requirements.txt"


def environment(name: str) -> AnalysisEnvironment:
    """The out-of-process environment of the packaged analysis ``name`` (module ``code/<name>``)."""
    return AnalysisEnvironment(
        entrypoint=f"{name}:run",
        requirements=REQUIREMENTS,
        paths=(CODE_DIR,),
        runtime_extras=("nwb", "s3"),
        env={"OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
    )


def use_environments(registry: AnalysisRegistry, out_of_process: bool) -> None:
    """Register the packaged analyses of ``registry`` out of process (their :func:`environment`)
    or in process (``out_of_process`` false: as they register themselves)."""
    for name in EXAMPLES:
        if name in registry:
            definition = registry.get(name)
            env = environment(name) if out_of_process else None
            registry.add(dataclasses.replace(definition, environment=env))


def run_script(module: str) -> str:
    """``Code.run_script`` of a packaged analysis: its registering module, in both modes."""
    return module.replace(".", "/") + ".py"
