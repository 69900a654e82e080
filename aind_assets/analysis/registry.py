"""The registry of analyses (pure: no Dagster).

An analysis is three things a user writes: an :class:`AnalysisSpecification` subclass (its
parameters), an :class:`AnalysisOutputs` subclass (its structured results) and a run function::

    class UnitQualitySpec(AnalysisSpecification):
        isi_threshold_ms: float = 1.5

    class UnitQualityOutputs(AnalysisOutputs):
        n_units: int

    @register_analysis(name="unit_quality", version="1.0.0",
                       spec=UnitQualitySpec, outputs=UnitQualityOutputs)
    def run(task: AnalysisDispatchModel, params: UnitQualitySpec, ctx: AnalysisContext):
        ...
        return UnitQualityOutputs(n_units=...)

Each registered analysis becomes the Dagster asset ``analysis/<name>``. Its ``code_version`` is
derived from ``version`` and the fixed parameters the dispatch config gives it, so changing
either marks the asset stale. The record of each job carries a :class:`Code` built here, whose
sha256 is the job's identity (see :mod:`aind_assets.analysis.wrapper`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aind_data_schema.components.identifiers import Code, DataAsset
from pydantic import ValidationError

from aind_assets.analysis.environments import AnalysisEnvironment
from aind_assets.analysis.files import dispatch_parameters, job_parameters
from aind_assets.analysis.models import (
    AnalysisDispatchModel,
    AnalysisOutputs,
    AnalysisSpecification,
)
from aind_assets.lineage import CODE_URL

__all__ = [
    "REGISTRY",
    "AnalysisDefinition",
    "AnalysisParameterError",
    "AnalysisRegistry",
    "UnknownAnalysisError",
    "canonical_json",
    "load_analyses",
    "register_analysis",
    "register_external_analysis",
]

#: Modules whose import registers the packaged analyses.
BUILTIN_MODULES = ("aind_assets.analysis.examples",)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

#: ``run(task, parameters, context) -> outputs`` (an AnalysisOutputs or a mapping of its fields).
RunFn = Callable[..., Any]


class AnalysisParameterError(ValueError):
    """The merged parameters of a job do not validate; the message holds pydantic's field errors."""


class UnknownAnalysisError(ValueError):
    """An analysis name that nobody registered."""


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys (stable across dict orderings)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class AnalysisDefinition:
    """One registered analysis."""

    name: str
    version: str
    spec: type[AnalysisSpecification]
    outputs: type[AnalysisOutputs]
    run: RunFn
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    url: str = CODE_URL
    run_script: str = ""
    #: Set: the analysis runs out of process in this environment (docs/analysis.md).
    environment: AnalysisEnvironment | None = None

    # -- parameters ---------------------------------------------------------------------------
    def code_defaults(self) -> dict[str, Any]:
        """The analysis-code layer of the parameter merge: ``analysis_name`` and ``defaults``."""
        return {"analysis_name": self.name, **dict(self.defaults)}

    def validate_parameters(
        self, merged: Mapping[str, Any], *, where: str = ""
    ) -> AnalysisSpecification:
        """Validate merged parameters with the analysis' specification model.

        Raises :class:`AnalysisParameterError` whose message names the analysis, ``where`` (the
        job) and every invalid field, as pydantic reports it.
        """
        try:
            return self.spec.model_validate(dict(merged))
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "parameters"
                lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r})")
            at = f" for {where}" if where else ""
            raise AnalysisParameterError(
                f"invalid parameters for analysis {self.name!r}{at}:\n" + "\n".join(lines)
            ) from exc

    # -- versions and Code --------------------------------------------------------------------
    def code_version(self, fixed_parameters: Mapping[str, Mapping[str, Any]] | None = None) -> str:
        """``<version>-<hash>``: the hash covers the version and the fixed parameters given to the
        analysis by each dispatch spec (``{spec name: fixed parameters}``)."""
        payload = {"version": self.version, "fixed": dict(fixed_parameters or {})}
        digest = hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:10]
        return f"{self.version}-{digest}"

    def _code(self, task: AnalysisDispatchModel, parameters: Mapping[str, Any]) -> Code:
        return Code(
            url=self.url,
            name=self.name,
            version=self.version,
            run_script=Path(self.run_script) if self.run_script else None,
            input_data=[DataAsset(url=u) for u in task.s3_location],
            parameters=dict(parameters),
        )

    def dispatch_code(
        self, task: AnalysisDispatchModel, fixed_parameters: Mapping[str, Any] | None = None
    ) -> Code:
        """The ``analysis_code`` the dispatcher gives a job, as analysis-pipeline-utils'
        ``check_task_parameters`` builds it: this analysis' url, name, version and run_script,
        one ``DataAsset`` per ``s3_location`` (in the task's order) and the parameters merged
        in order analysis code < fixed < ``file_location`` < distributed set
        (:func:`~aind_assets.analysis.files.dispatch_parameters`), neither validated nor
        default-filled nor sorted, so its sha256 is the package's for the same job."""
        return self._code(
            task,
            dispatch_parameters(
                self.code_defaults(),
                fixed_parameters,
                task.file_location,
                task.distributed_parameters,
            ),
        )

    def job_code(
        self, task: AnalysisDispatchModel, run_config: Mapping[str, Any] | None = None
    ) -> Code:
        """The ``Code`` of one job, as the package's wrapper builds it: the dispatched
        ``analysis_code`` parameters (or :meth:`dispatch_code` of the task without fixed
        parameters when it has none) < run config < ``file_location`` < distributed set.

        Its sha256 (:func:`aind_assets.lineage.record_name`) is the job's identity and record
        name; the run function gets these parameters validated (:meth:`validate_parameters`),
        the record keeps them as merged, as analysis-pipeline-utils does."""
        dispatched = task.analysis_code or self.dispatch_code(task)
        base = dispatched.parameters.model_dump() if dispatched.parameters else {}
        return self._code(
            task,
            job_parameters(base, run_config, task.file_location, task.distributed_parameters),
        )


class AnalysisRegistry:
    """Analyses by name."""

    def __init__(self) -> None:
        self._analyses: dict[str, AnalysisDefinition] = {}

    def add(self, definition: AnalysisDefinition) -> AnalysisDefinition:
        if not _NAME.match(definition.name):
            raise ValueError(
                f"analysis name {definition.name!r} must start with a letter and hold only "
                "letters, digits and _ (it becomes the asset key analysis/<name>)"
            )
        if not definition.version or not str(definition.version).strip():
            raise ValueError(f"analysis {definition.name!r} needs a non-empty version")
        for what, model, base in (
            ("spec", definition.spec, AnalysisSpecification),
            ("outputs", definition.outputs, AnalysisOutputs),
        ):
            if not (isinstance(model, type) and issubclass(model, base)):
                raise TypeError(
                    f"analysis {definition.name!r}: {what} must be a subclass of {base.__name__}"
                )
        existing = self._analyses.get(definition.name)
        if existing is not None and _qualname(existing.run) != _qualname(definition.run):
            raise ValueError(
                f"analysis {definition.name!r} is already registered by "
                f"{_qualname(existing.run)}; names must be unique"
            )
        self._analyses[definition.name] = definition
        return definition

    def register(
        self,
        *,
        name: str,
        version: str,
        spec: type[AnalysisSpecification],
        outputs: type[AnalysisOutputs],
        description: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        url: str = CODE_URL,
        environment: AnalysisEnvironment | None = None,
        run_script: str | None = None,
    ) -> Callable[[RunFn], RunFn]:
        """Decorator registering ``run`` as the analysis ``name`` (out of process in
        ``environment`` when given: then ``run`` is only its in-process fallback, unused).
        ``run_script`` (``Code.run_script``, part of the job's identity) defaults to the path
        of ``run``'s module, or of the environment's entry point module."""

        def decorate(run: RunFn) -> RunFn:
            self.add(
                AnalysisDefinition(
                    name=name,
                    version=str(version),
                    spec=spec,
                    outputs=outputs,
                    run=run,
                    description=(description or (run.__doc__ or "").strip().split("\n\n")[0]),
                    defaults=dict(defaults or {}),
                    url=url,
                    run_script=run_script or _run_script(run, environment),
                    environment=environment,
                )
            )
            return run

        return decorate

    def get(self, name: str) -> AnalysisDefinition:
        try:
            return self._analyses[name]
        except KeyError:
            known = ", ".join(sorted(self._analyses)) or "none"
            raise UnknownAnalysisError(
                f"no analysis named {name!r} is registered; registered: {known}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._analyses)

    def __contains__(self, name: object) -> bool:
        return name in self._analyses

    def __iter__(self) -> Iterator[AnalysisDefinition]:
        return iter([self._analyses[n] for n in self.names()])

    def __len__(self) -> int:
        return len(self._analyses)


def _run_script(run: RunFn, environment: AnalysisEnvironment | None) -> str:
    module = environment.entrypoint.split(":", 1)[0] if environment else run.__module__
    return module.replace(".", "/") + ".py"


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


#: The process-wide registry the platform builds its assets from.
REGISTRY = AnalysisRegistry()


def register_analysis(
    *,
    name: str,
    version: str,
    spec: type[AnalysisSpecification],
    outputs: type[AnalysisOutputs],
    description: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    url: str = CODE_URL,
    registry: AnalysisRegistry | None = None,
    environment: AnalysisEnvironment | None = None,
    run_script: str | None = None,
) -> Callable[[RunFn], RunFn]:
    """Register an analysis (in :data:`REGISTRY` unless ``registry`` is given); see the module
    docstring. ``defaults`` are the analysis-code layer of the parameter merge; with
    ``environment`` it runs out of process (:func:`register_external_analysis`)."""
    return (REGISTRY if registry is None else registry).register(
        name=name,
        version=version,
        spec=spec,
        outputs=outputs,
        description=description,
        defaults=defaults,
        url=url,
        environment=environment,
        run_script=run_script,
    )


def register_external_analysis(
    *,
    name: str,
    version: str,
    spec: type[AnalysisSpecification],
    outputs: type[AnalysisOutputs],
    environment: AnalysisEnvironment,
    description: str = "",
    defaults: Mapping[str, Any] | None = None,
    url: str = CODE_URL,
    registry: AnalysisRegistry | None = None,
) -> AnalysisDefinition:
    """Register an analysis whose code lives only in its own environment: the platform imports
    its parameter and output models (pydantic only), never its code, and runs
    ``environment.entrypoint`` out of process."""

    def run(task: Any, params: Any, ctx: Any) -> Any:
        raise RuntimeError(f"analysis {name!r} runs out of process only")

    run.__qualname__ = f"external:{environment.entrypoint}"
    run.__module__ = environment.entrypoint.split(":", 1)[0]
    return (REGISTRY if registry is None else registry).add(
        AnalysisDefinition(
            name=name,
            version=str(version),
            spec=spec,
            outputs=outputs,
            run=run,
            description=description,
            defaults=dict(defaults or {}),
            url=url,
            run_script=_run_script(run, environment),
            environment=environment,
        )
    )


def load_analyses(
    modules: Iterable[str] = (), *, examples_out_of_process: bool = False
) -> AnalysisRegistry:
    """Import the packaged analyses and ``modules`` (which register theirs); the registry. The
    packaged analyses run in process, or out of process with ``examples_out_of_process`` (the
    setting ``AIND_EXAMPLES_OUT_OF_PROCESS``, read by the callers)."""
    for module in (*BUILTIN_MODULES, *modules):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UnknownAnalysisError(
                f"cannot import analysis module {module!r} (AIND_ANALYSIS_MODULES): {exc}"
            ) from exc
    from aind_assets.analysis.examples.environments import use_environments

    use_environments(REGISTRY, examples_out_of_process)
    return REGISTRY
