"""Release staging helpers (pure): QC criteria on ``scans.tsv`` rows, rebuilding ``scans.tsv``
and ``sessions.tsv``, squashing per-session derivative folders, release prefixes.

QC criteria have the shape used by the HBCD scripts: ``{"HBCD_compliant": ["Yes", "equals"],
"QU_motion": [2, "less_than"]}``. A missing column or a non-numeric cell (``n/a``, ``_NaN_``,
``NaN``) fails any numeric comparison; ``equals``/``not_equals`` with a string threshold compare
strings exactly (after stripping spaces).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aind_assets.hbcd.tsv import parse_tsv, select_tsv_rows

__all__ = [
    "QC_OPERATORS",
    "SquashPlan",
    "passes_qc",
    "qc_failures",
    "rebuild_scans_tsv",
    "rebuild_sessions_tsv",
    "release_prefixes",
    "release_ready_files",
    "squash_derivative_relpath",
    "squash_derivatives",
]

_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "less_than": operator.lt,
    "less_than_or_equal": operator.le,
    "greater_than": operator.gt,
    "greater_than_or_equal": operator.ge,
}
QC_OPERATORS = frozenset({"equals", "not_equals", "in", "not_in", *_NUMERIC})


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    try:
        f = float(str(value).strip())
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def _check(cell: str | None, threshold: Any, op: str) -> bool:
    if op not in QC_OPERATORS:
        raise ValueError(f"unknown QC operator {op!r}")
    if cell is None:
        return False
    if op in ("in", "not_in"):
        values = {str(v).strip() for v in threshold}
        hit = cell.strip() in values
        return hit if op == "in" else not hit
    if op in ("equals", "not_equals"):
        if isinstance(threshold, str):
            same = cell.strip() == threshold.strip()
        else:
            a, b = _number(cell), _number(threshold)
            same = a is not None and b is not None and a == b
        return same if op == "equals" else not same
    a, b = _number(cell), _number(threshold)
    return a is not None and b is not None and _NUMERIC[op](a, b)


def qc_failures(row: Mapping[str, str], criteria: Mapping[str, Sequence[Any]]) -> list[str]:
    """Columns (with operator) that fail; empty list = passes."""
    out = []
    for column, (threshold, op) in criteria.items():
        if not _check(row.get(column), threshold, op):
            out.append(f"{column} {op} {threshold!r}")
    return out


def passes_qc(row: Mapping[str, str], criteria: Mapping[str, Sequence[Any]]) -> bool:
    return not qc_failures(row, criteria)


def release_ready_files(scans_tsv: str, criteria: Mapping[str, Sequence[Any]]) -> list[str]:
    """``filename`` values of the ``scans.tsv`` rows passing the criteria."""
    return [r["filename"] for r in parse_tsv(scans_tsv).rows if passes_qc(r, criteria)]


def rebuild_scans_tsv(scans_tsv: str, keep_filenames: Iterable[str]) -> str:
    """``scans.tsv`` with only the rows of files included in the release."""
    keep = set(keep_filenames)
    return select_tsv_rows(scans_tsv, lambda r: r.get("filename") in keep)


def rebuild_sessions_tsv(sessions_tsv: str, keep_sessions: Iterable[str]) -> str:
    """``sessions.tsv`` with only the released sessions (``V02`` or ``ses-V02``)."""
    keep = {s if s.startswith("ses-") else f"ses-{s}" for s in keep_sessions}
    return select_tsv_rows(sessions_tsv, lambda r: r.get("session_id") in keep)


def squash_derivative_relpath(relpath: str) -> str | None:
    """``ses-<label>/<pipeline>/rest`` -> ``<pipeline>/rest`` (relative to the derivatives
    root); ``None`` for ``cbrain_misc`` and for paths outside a ``ses-*`` folder."""
    parts = relpath.strip("/").split("/")
    if len(parts) < 3 or not parts[0].startswith("ses-") or parts[1] == "cbrain_misc":
        return None
    return "/".join(parts[1:])


@dataclass
class SquashPlan:
    mapping: dict[str, str] = field(default_factory=dict)  # release relpath -> source relpath
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # all sources per clash


def squash_derivatives(relpaths: Iterable[str]) -> SquashPlan:
    """Plan the squash of ``derivatives/ses-*/<pipeline>`` into ``derivatives/<pipeline>``.
    When several sessions provide the same file (e.g. a pipeline's dataset_description.json),
    the last session in sorted order wins and the clash is listed in ``duplicates``."""
    plan = SquashPlan()
    for src in sorted(relpaths):
        dst = squash_derivative_relpath(src)
        if dst is None:
            continue
        if dst in plan.mapping:
            plan.duplicates.setdefault(dst, [plan.mapping[dst]]).append(src)
        plan.mapping[dst] = src
    return plan


def release_prefixes(release: str) -> tuple[str, str]:
    """``(<release>/hbcd/rawdata/, <release>/hbcd/derivatives/)`` in the staging bucket."""
    release = release.strip("/")
    if not release or "/" in release:
        raise ValueError("release identifier must be a single path segment")
    return f"{release}/hbcd/rawdata/", f"{release}/hbcd/derivatives/"
