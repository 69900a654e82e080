"""Environments of out-of-process analyses: declared, hashed, built once and cached (pure: no
Dagster).

An analysis declares an :class:`AnalysisEnvironment`: a requirements file (``requirements.txt``,
a ``uv pip compile`` lock, or a ``pyproject.toml``) for a local virtual environment, and/or a
container image for production, plus the ``module:function`` to run in it. Locally the
environment is built with ``uv`` under ``<environments dir>/<name>-<key>`` where the key is
sha256 of the requirements, the interpreter's version and the runtime's version and source; a
file lock makes concurrent builds of one key wait for each other, and a marker written last
makes a half-built environment be rebuilt, never used.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "RUNTIME_VERSION",
    "AnalysisEnvironment",
    "BuiltEnvironment",
    "EnvironmentBuildError",
    "default_runtime_source",
    "ensure_environment",
    "environment_digest",
    "find_python",
    "python_version",
]

#: The version of ``aind-assets-runtime`` this platform speaks to (runtime/pyproject.toml).
RUNTIME_VERSION = "0.1.0"
MARKER = ".aind-env.json"


class EnvironmentBuildError(RuntimeError):
    """An analysis environment could not be built; the message holds the installer's output."""


@dataclass(frozen=True)
class AnalysisEnvironment:
    """Where and how an analysis runs out of process.

    * ``entrypoint`` — ``module:function`` in the environment, called ``run(task, params, ctx)``;
    * ``requirements`` — requirements/lock/pyproject file of the local virtual environment;
    * ``python`` — ``"3.12"`` or an interpreter path (default: the platform's Python);
    * ``paths`` — source folders put on ``PYTHONPATH`` (the capsule's ``code/`` folder);
    * ``image`` — container image for production (ECS / Kubernetes), best pinned by digest;
    * ``spec`` — optional ``module:Class`` (pydantic) validating the parameters in the
      environment; without it the run function gets them as attributes of a permissive model;
    * ``runtime_extras`` — extras of ``aind-assets-runtime`` to install (``nwb``, ``s3``, ``zarr``);
    * ``memory_limit_mb`` — address-space limit of the local process (default: the setting);
    * ``timeout_s`` — a job running longer is killed and fails (default: the setting);
    * ``batch`` — jobs of one step share one process (False: one process per job).
    """

    entrypoint: str
    requirements: Path | None = None
    python: str | None = None
    paths: tuple[Path, ...] = ()
    image: str | None = None
    spec: str | None = None
    runtime_extras: tuple[str, ...] = ()
    memory_limit_mb: int | None = None
    timeout_s: float | None = None
    batch: bool = True
    task_definition: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        module, _, attr = self.entrypoint.partition(":")
        if not module or not attr:
            raise ValueError(f"entrypoint {self.entrypoint!r} must be 'module:function'")
        if self.requirements is None and self.image is None:
            raise ValueError("an analysis environment needs requirements, an image, or both")
        if self.requirements is not None and not Path(self.requirements).is_file():
            raise ValueError(f"requirements file {self.requirements} does not exist")

    def requirements_text(self) -> str:
        return Path(self.requirements).read_text() if self.requirements else ""


@dataclass(frozen=True)
class BuiltEnvironment:
    path: Path
    python: Path
    key: str
    digest: str
    python_version: str
    reused: bool
    lock_hash: str


@cache
def python_version(python: str) -> str:
    """``3.12.1`` of an interpreter."""
    out = subprocess.run(
        [python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def find_python(wanted: str | None) -> str:
    """An interpreter: a path, a version (``3.12``: ``python3.12`` on PATH or under pyenv) or,
    for ``None``, the platform's own."""
    if not wanted:
        return sys.executable
    if os.sep in wanted:
        if Path(wanted).exists():
            return wanted
        raise EnvironmentBuildError(f"Python interpreter {wanted} does not exist")
    candidates = []
    for root in (os.path.expanduser("~/.pyenv/versions"), "/root/.pyenv/versions"):
        candidates += sorted(glob.glob(f"{root}/{wanted}*/bin/python{wanted}"), reverse=True)
    on_path = shutil.which(f"python{wanted}")
    if on_path and "/shims/" not in on_path:  # pyenv shims fail outside a pyenv shell
        candidates.insert(0, on_path)
    for candidate in candidates:
        try:
            python_version(candidate)
        except (OSError, subprocess.CalledProcessError):
            continue
        return candidate
    raise EnvironmentBuildError(f"no Python {wanted} found (on PATH or under ~/.pyenv/versions)")


def default_runtime_source() -> Path:
    """The runtime's source tree in this repository (``runtime/``)."""
    return Path(__file__).resolve().parents[2] / "runtime"


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    files = [root / "pyproject.toml", *(root / "aind_assets_runtime").rglob("*.py")]
    for path in sorted(files):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def environment_digest(env: AnalysisEnvironment, python: str) -> str:
    """sha256 of what the environment holds: requirements, Python version, runtime extras.

    Recorded in each job's ``Code`` (so it is part of the job's identity)."""
    payload = {
        "requirements": env.requirements_text(),
        "python": python_version(python),
        "runtime_extras": sorted(env.runtime_extras),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@contextmanager
def _file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EnvironmentBuildError(
                        f"another build holds {path} for more than {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], what: str, env: dict[str, str]) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise EnvironmentBuildError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def ensure_environment(
    name: str,
    env: AnalysisEnvironment,
    *,
    cache_dir: Path,
    uv: str,
    runtime_source: Path | None = None,
    timeout_s: float = 1800.0,
) -> BuiltEnvironment:
    """The built environment of ``env`` (building it once; later calls reuse it)."""
    if env.requirements is None:
        raise EnvironmentBuildError(
            f"analysis {name!r} has only an image: it runs on ECS / Kubernetes, not locally"
        )
    source = runtime_source or default_runtime_source()
    python = find_python(env.python)
    digest = environment_digest(env, python)
    key_payload = {"digest": digest, "runtime": RUNTIME_VERSION, "source": _tree_digest(source)}
    key = hashlib.sha256(json.dumps(key_payload, sort_keys=True).encode()).hexdigest()
    path = Path(cache_dir) / f"{name}-{key[:16]}"
    venv_python = path / "bin" / "python"
    marker = path / MARKER

    def built(reused: bool) -> BuiltEnvironment:
        info: dict[str, Any] = json.loads(marker.read_text())
        return BuiltEnvironment(
            path, venv_python, key, digest, info["python_version"], reused, info["lock_hash"]
        )

    if marker.exists():
        return built(True)
    with _file_lock(Path(cache_dir) / f"{name}-{key[:16]}.lock", timeout_s):
        if marker.exists():  # built by another process while this one waited
            return built(True)
        if path.exists():  # a build that died half-way: start over
            shutil.rmtree(path)
        child_env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "VIRTUAL_ENV": str(path)}
        _run([uv, "venv", "--quiet", "--python", python, str(path)], "uv venv", child_env)
        with tempfile.TemporaryDirectory(prefix="aind-runtime-") as tmp:
            # A private copy: the build writes build/ and *.egg-info beside the sources.
            copy = Path(tmp) / "runtime"
            shutil.copytree(
                source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
            )
            runtime = str(copy)
            if env.runtime_extras:
                extras = ",".join(sorted(env.runtime_extras))
                runtime = f"aind-assets-runtime[{extras}] @ file://{copy}"
            install = [uv, "pip", "install", "--quiet", "--python", str(venv_python), runtime]
            install += ["-r", str(env.requirements)]
            _run(install, f"installing the environment of {name!r}", child_env)
        frozen = _run(
            [uv, "pip", "freeze", "--python", str(venv_python)], "uv pip freeze", child_env
        )
        (path / "requirements.lock").write_text(frozen)
        info = {
            "name": name,
            "key": key,
            "digest": digest,
            "python_version": python_version(python),
            "runtime_version": RUNTIME_VERSION,
            "lock_hash": hashlib.sha256(frozen.encode()).hexdigest(),
            "requirements": str(env.requirements),
        }
        partial = marker.with_suffix(".tmp")
        partial.write_text(json.dumps(info, indent=2))
        partial.replace(marker)  # last: the environment is complete
        return built(False)
