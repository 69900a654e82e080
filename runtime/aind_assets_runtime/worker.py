"""``python -m aind_assets_runtime``: run an analysis' jobs in its own environment over Pipes.

The platform gives the worker its jobs in the Pipes extras (``jobs``: a list) and, when
``serve`` is true, one job per line of standard input (JSON) until an empty line or the end of
input, so several jobs share one process. For each job the worker imports the analysis'
``entrypoint`` (``module:function``), calls ``run(task, params, ctx)`` and reports one Pipes
custom message ``{"kind": "aind.job", "id", "ok", "outputs" | "error", "traceback"}``. The
platform writes the results folder and the record (only for ``ok`` jobs); the worker writes
nothing but the job's ``results_dir`` (or, remotely, its staging folder).
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, open_dagster_pipes
from pydantic import BaseModel

from aind_assets_runtime import __version__
from aind_assets_runtime.context import AnalysisContext, DispatchTask, Parameters, Storage

#: Exit status after a fatal error (version mismatch, memory exhausted): start a new worker.
EXIT_FATAL = 3

_loaded: dict[str, Any] = {}


def load(ref: str) -> Any:
    """The object named ``module:attribute`` (cached)."""
    if ref not in _loaded:
        module, _, attr = ref.partition(":")
        if not module or not attr:
            raise ValueError(f"entry point {ref!r} must be 'module:attribute'")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        _loaded[ref] = obj
    return _loaded[ref]


def _jsonable(raw: Any) -> Any:
    if isinstance(raw, BaseModel):
        return raw.model_dump(mode="json")
    return json.loads(json.dumps(raw, default=str))


def upload_tree(local: Path, url: str, storage: Storage) -> None:
    """Copy the results folder to ``url`` (remote runs: the platform fetches it from there)."""
    fs = storage.filesystem(url)
    base = url[len("s3://") :] if url.startswith("s3://") else url
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{base.rstrip('/')}/{path.relative_to(local).as_posix()}")


def run_one(job: Mapping[str, Any], storage: Storage, log: Any) -> dict[str, Any]:
    """Run one job; the message to report. ``fatal`` is set when the process must end."""
    reply: dict[str, Any] = {"kind": "aind.job", "id": job.get("id"), "ok": False}
    try:
        run: Callable[..., Any] = load(job["entrypoint"])
        spec = load(job["spec"]) if job.get("spec") else Parameters
        params = spec.model_validate(dict(job.get("parameters") or {}))
        task = DispatchTask.model_validate(job["task"])
        with tempfile.TemporaryDirectory(prefix="aind-job-") as tmp:
            results_dir = Path(job.get("results_dir") or tmp)
            results_dir.mkdir(parents=True, exist_ok=True)
            ctx = AnalysisContext(
                results_dir=results_dir,
                task=task,
                analysis=str(job.get("analysis")),
                storage=storage,
                log=log,
            )
            raw = run(task, params, ctx)
            reply["outputs"] = _jsonable(raw)
            if job.get("staging_url"):
                upload_tree(results_dir, str(job["staging_url"]), storage)
        reply["ok"] = True
    except MemoryError as exc:
        reply["error"] = f"MemoryError: {exc}".rstrip(": ")
        reply["memory"] = True
        reply["fatal"] = True
        reply["traceback"] = traceback.format_exc()
    except BaseException as exc:  # noqa: BLE001 - every failure is reported with its traceback
        reply["error"] = f"{type(exc).__name__}: {exc}"
        reply["traceback"] = traceback.format_exc()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            reply["fatal"] = True
    return reply


def serve(pipes: PipesContext) -> int:
    extras = pipes.extras
    expected = extras.get("runtime_version")
    if expected and expected != __version__:
        pipes.report_custom_message(
            {
                "kind": "aind.fatal",
                "error": f"aind-assets-runtime {__version__} is installed in the analysis "
                f"environment but the platform expects {expected}: rebuild the environment",
            }
        )
        return EXIT_FATAL
    pipes.report_custom_message(
        {
            "kind": "aind.ready",
            "runtime_version": __version__,
            "python": sys.version.split()[0],
        }
    )
    storage = Storage.model_validate(extras.get("storage") or {})

    def handle(job: Mapping[str, Any]) -> bool:
        reply = run_one(job, storage, pipes.log)
        if not reply["ok"]:
            pipes.log.error(f"job {reply['id']} failed:\n{reply.get('traceback', '')}")
        pipes.report_custom_message(reply)
        return not reply.get("fatal")

    for job in extras.get("jobs") or []:
        if not handle(job):
            return EXIT_FATAL
    if extras.get("serve"):
        for line in sys.stdin:
            if not line.strip():
                break
            if not handle(json.loads(line)):
                return EXIT_FATAL
    return 0


def main() -> int:
    with open_dagster_pipes() as pipes:
        return serve(pipes)
