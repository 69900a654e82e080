"""QC criteria on ``scans.tsv`` rows (pure). They have the shape the HBCD scripts use:
``{"HBCD_compliant": ["Yes", "equals"], "QU_motion": [2, "less_than"]}``; operators are
:data:`QC_OPERATORS`. A missing column or a *missing value* (``n/a``, ``_NaN_``, ``_Inf_``, ``NaN``,
``inf``, empty; see :data:`MISSING_VALUES`) fails every criterion, ``not_equals``/``not_in``
included: a file whose QC is unknown is not release-ready. ``equals``/``not_equals`` with a string
threshold compare strings exactly (after stripping spaces), with a number numerically (``"3.0"``
equals ``3``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aind_assets.hbcd.formats.tsv import parse_tsv

_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "less_than": operator.lt,
    "less_than_or_equal": operator.le,
    "greater_than": operator.gt,
    "greater_than_or_equal": operator.ge,
}
QC_OPERATORS = frozenset({"equals", "not_equals", "in", "not_in", *_NUMERIC})
#: Cell values read as missing (compared case-insensitively after stripping spaces).
MISSING_VALUES = frozenset(
    {"", "n/a", "na", "nan", "_nan_", "inf", "+inf", "-inf", "_inf_", "_-inf_", "none", "null"}
)


# --- QC --------------------------------------------------------------------------------------
def is_missing(cell: str | None) -> bool:
    return cell is None or cell.strip().casefold() in MISSING_VALUES


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
        raise ValueError(f"unknown QC operator {op!r} (one of {', '.join(sorted(QC_OPERATORS))})")
    if is_missing(cell):
        return False
    assert cell is not None
    if op in ("in", "not_in"):
        values = {str(v).strip() for v in threshold}
        numbers = {n for n in (_number(v) for v in threshold) if n is not None}
        hit = cell.strip() in values or (_number(cell) is not None and _number(cell) in numbers)
        return hit if op == "in" else not hit
    if op in ("equals", "not_equals"):
        if isinstance(threshold, str):
            same = cell.strip() == threshold.strip()
        else:
            a, b = _number(cell), _number(threshold)
            if a is None:
                return False  # a non-numeric cell against a number: unknown, fails
            same = b is not None and a == b
        return same if op == "equals" else not same
    a, b = _number(cell), _number(threshold)
    return a is not None and b is not None and _NUMERIC[op](a, b)


def qc_failures(row: Mapping[str, str], criteria: Mapping[str, Sequence[Any]]) -> list[str]:
    """Criteria (``"column op threshold"``) the row fails; empty list = passes."""
    out = []
    for column, (threshold, op) in criteria.items():
        if not _check(row.get(column), threshold, op):
            shown = row.get(column)
            got = "missing" if is_missing(shown) else repr(shown)
            out.append(f"{column} {op} {threshold!r} (got {got})")
    return out


def passes_qc(row: Mapping[str, str], criteria: Mapping[str, Sequence[Any]]) -> bool:
    return not qc_failures(row, criteria)


def release_ready_files(scans_tsv: str, criteria: Mapping[str, Sequence[Any]]) -> list[str]:
    """``filename`` values of the ``scans.tsv`` rows passing the criteria."""
    return [r["filename"] for r in parse_tsv(scans_tsv).rows if passes_qc(r, criteria)]


def criteria_check(criteria: Mapping[str, Any], where: str) -> dict[str, tuple[Any, str]]:
    """Validate ``{column: [threshold, op]}``; raises ``ValueError`` naming ``where`` and the
    column."""
    if not isinstance(criteria, Mapping):
        raise ValueError(f"{where}: QC criteria must be a mapping {{column: [value, op]}}")
    out: dict[str, tuple[Any, str]] = {}
    for column, crit in criteria.items():
        at = f"{where}.{column}"
        if not isinstance(crit, list | tuple) or len(crit) != 2:
            raise ValueError(f"{at}: must be [value, operator], e.g. [2, less_than]")
        threshold, op = crit
        if op not in QC_OPERATORS:
            raise ValueError(
                f"{at}: unknown operator {op!r} (one of {', '.join(sorted(QC_OPERATORS))})"
            )
        if op in ("in", "not_in") and not isinstance(threshold, list | tuple):
            raise ValueError(f"{at}: {op} needs a list of values")
        if op in _NUMERIC and _number(threshold) is None:
            raise ValueError(f"{at}: {op} needs a number, got {threshold!r}")
        out[str(column)] = (list(threshold) if op in ("in", "not_in") else threshold, op)
    return out
