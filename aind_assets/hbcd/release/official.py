"""The official BIDS validator (``bids-validator-deno`` 3.x, the schema validator the BIDS
community uses) run on a local mirror of a staged release (no Dagster).

The validator reads a local directory. :func:`mirror_release` streams every file of
``<release>/hbcd/`` from the object store into a temporary folder, except the raw sample files
that no validator rule reads (:data:`PLACEHOLDER_EXTENSIONS`: BrainVision ``.eeg``, EEGLAB
``.fdt``), which become zero-filled placeholders of the right size (sparse files: no disk used).
``rawdata/`` and every ``derivatives/<pipeline>/`` dataset are validated (pipeline outputs that
are not BIDS files, such as ``imagestats``' JSON-only statistics, are in that dataset's
``.bidsignore``: :data:`~aind_assets.hbcd.release.plan.PIPELINE_BIDS_IGNORE`).
NIfTI files are copied in full: the validator reads their headers (units, dimensions) through
gzip. :func:`official_problems` runs the validator on each dataset (``derivatives=False``:
``rawdata/`` only), bounded in time, and turns each issue of severity
``error`` into a :class:`~aind_assets.hbcd.release.validity.Problem` (rule
``bids-validator:<CODE>``); warnings are not problems.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from aind_assets.hbcd.release.validity import Problem
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url

__all__ = [
    "PLACEHOLDER_EXTENSIONS",
    "VALIDATOR_TIMEOUT_S",
    "ValidatorUnavailableError",
    "mirror_release",
    "official_problems",
    "run_validator",
    "validator_binary",
]

#: Raw sample files the validator never opens: mirrored as zero-filled files of their size.
PLACEHOLDER_EXTENSIONS = (".eeg", ".fdt")
#: Upper bound of one validator run (per dataset), seconds.
VALIDATOR_TIMEOUT_S = 600.0
_BINARY = "bids-validator-deno"
CHUNK = 8 << 20


class ValidatorUnavailableError(RuntimeError):
    """The official validator could not be run (binary missing, timed out, bad output)."""


def validator_binary() -> str:
    """Path of ``bids-validator-deno``: beside the running Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / _BINARY
    if beside.exists():
        return str(beside)
    found = shutil.which(_BINARY)
    if found is None:
        raise ValidatorUnavailableError(
            f"{_BINARY} not found beside {sys.executable} or on PATH: install the PyPI package "
            "bids-validator-deno (a dependency of aind-assets; scripts/install installs it)"
        )
    return found


def run_validator(dataset: Path, *, timeout_s: float = VALIDATOR_TIMEOUT_S) -> list[dict]:
    """The validator's issues (``code``, ``severity``, ``location``...) for a local dataset."""
    cmd = [validator_binary(), str(dataset), "--format", "json", "--max-rows", "-1"]
    env = {**os.environ, "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ValidatorUnavailableError(
            f"{_BINARY} did not finish within {timeout_s:g} s on {dataset.name}"
        ) from None
    try:
        report = json.loads(proc.stdout)
        issues = report["issues"]["issues"]
    except (ValueError, KeyError, TypeError):
        tail = proc.stderr.decode("utf-8", "replace")[-500:]
        raise ValidatorUnavailableError(
            f"{_BINARY} exited with {proc.returncode} without a JSON report: {tail}"
        ) from None
    return [i for i in issues if isinstance(i, dict)]


def mirror_release(
    store: ObjectStoreResource,
    hbcd_root: str,
    relpaths: Sequence[str],
    local: Path,
    texts: Mapping[str, bytes] | None = None,
) -> None:
    """Stream the staged files into ``local`` (placeholders for :data:`PLACEHOLDER_EXTENSIONS`;
    ``texts``: contents already at hand, by relative path)."""
    texts = texts or {}

    def one(rel: str) -> None:
        target = local / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in texts:
            target.write_bytes(texts[rel])
            return
        url = join_url(hbcd_root, rel)
        if rel.lower().endswith(PLACEHOLDER_EXTENSIONS):
            with open(target, "wb") as f:
                f.truncate(store.info(url).size)
            return
        with store.open(url, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)

    store.map_concurrently(one, list(relpaths))


def _datasets(relpaths: Sequence[str], derivatives: bool) -> list[str]:
    out = {"rawdata"} if any(p.startswith("rawdata/") for p in relpaths) else set()
    for p in relpaths:
        parts = p.split("/")
        if derivatives and parts[0] == "derivatives" and len(parts) > 2:
            out.add(f"derivatives/{parts[1]}")
    return sorted(out)


def official_problems(
    store: ObjectStoreResource,
    hbcd_root: str,
    relpaths: Sequence[str],
    *,
    texts: Mapping[str, bytes] | None = None,
    timeout_s: float = VALIDATOR_TIMEOUT_S,
    derivatives: bool = True,
) -> list[Problem]:
    """Errors of the official validator for every dataset of the staged release (paths
    relative to ``hbcd/``; ``derivatives=False``: ``rawdata`` only, not each
    ``derivatives/<pipeline>`` dataset). A validator that cannot run is a problem too (rule
    ``bids-validator``), so the blocking check fails rather than passes unchecked."""
    out: list[Problem] = []
    with tempfile.TemporaryDirectory(prefix="aind-bids-") as tmp:
        local = Path(tmp)
        datasets = _datasets(relpaths, derivatives)
        mirrored = [p for p in relpaths if any(p.startswith(f"{d}/") for d in datasets)]
        mirror_release(store, hbcd_root, mirrored, local, texts)
        for dataset in datasets:
            try:
                issues = run_validator(local / dataset, timeout_s=timeout_s)
            except ValidatorUnavailableError as e:
                out.append(Problem(f"{dataset}/", "bids-validator", str(e)))
                continue
            for issue in issues:
                if issue.get("severity") != "error":
                    continue
                code = str(issue.get("code", "?"))
                sub = issue.get("subCode")
                where = str(issue.get("location") or "/").lstrip("/")
                message = code + (f" ({sub})" if sub else "")
                if issue.get("issueMessage"):
                    message += ": " + str(issue["issueMessage"]).strip().splitlines()[0]
                out.append(Problem(f"{dataset}/{where}", f"bids-validator:{code}", message))
    return out
