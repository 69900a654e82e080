"""LORIS-facing summaries of a staged release (pure tables, plus writing them as Parquet/CSV).

From a release's completion marker (its checksum manifest), one row per subject, session and
pipeline of the derivatives: number of files, bytes, the newest source timestamp (when the
de-identified derivative was last written) and a fingerprint of the files (sha256 over sorted
``(path, sha256)``). The difference from a previous release classifies each row as ``added``,
``removed``, ``replaced`` (same subject/session/pipeline, different files or bytes) or
``unchanged`` — what LORIS needs to add, delete and replace its records. Only release-candidate
IDs, session labels and pipeline names appear: no identifier.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = [
    "CHANGE_COLUMNS",
    "SUMMARY_COLUMNS",
    "derivative_summary",
    "markdown_table",
    "previous_release",
    "summary_changes",
    "table_bytes",
]

SUMMARY_COLUMNS = ["subject", "session", "pipeline", "files", "bytes", "newest", "fingerprint"]
CHANGE_COLUMNS = [
    "subject",
    "session",
    "pipeline",
    "change",
    "files",
    "bytes",
    "newest",
    "previous_files",
    "previous_bytes",
    "previous_newest",
]
_DEST = re.compile(r"hbcd/derivatives/([^/]+)/(sub-[A-Za-z0-9]+)(?=[/._])")
_SOURCE_SES = re.compile(r"derivatives/(ses-[A-Za-z0-9]+)/")
_DEST_SES = re.compile(r"/(ses-[A-Za-z0-9]+)/")


def derivative_summary(marker: Mapping[str, Any]) -> pd.DataFrame:
    """Per subject, session and pipeline: files, bytes, newest timestamp, fingerprint.
    Pipeline-level files (``dataset_description.json``...) belong to no subject and are left
    out."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for f in marker.get("files", []):
        m = _DEST.match(f["path"])
        if not m:
            continue
        ses = _SOURCE_SES.match(f.get("source") or "") or _DEST_SES.search(f["path"])
        groups[(m[2], ses[1] if ses else "", m[1])].append(f)
    rows = []
    for (subject, session, pipeline), fs in sorted(groups.items()):
        stamps = [
            pd.Timestamp(f["source_last_modified"]) for f in fs if f.get("source_last_modified")
        ]
        digest = hashlib.sha256()
        for f in sorted(fs, key=lambda f: f["path"]):
            digest.update(f"{f['path']}\0{f['sha256']}\n".encode())
        rows.append(
            {
                "subject": subject,
                "session": session,
                "pipeline": pipeline,
                "files": len(fs),
                "bytes": sum(int(f["size"]) for f in fs),
                "newest": max(stamps) if stamps else pd.NaT,
                "fingerprint": digest.hexdigest(),
            }
        )
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    df["files"] = df["files"].astype("int64")
    df["bytes"] = df["bytes"].astype("int64")
    df["newest"] = pd.to_datetime(df["newest"], utc=True)
    return df


def summary_changes(current: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """Every row of ``current`` with its ``change`` against ``previous`` (``added`` for all when
    there is no previous release), then the ``removed`` rows of ``previous``."""
    key = ["subject", "session", "pipeline"]
    prev = previous if previous is not None else pd.DataFrame(columns=SUMMARY_COLUMNS)
    prev_index = {tuple(r[k] for k in key): r for r in prev.to_dict("records")}
    rows = []
    for r in current.to_dict("records"):
        k = tuple(r[c] for c in key)
        p = prev_index.pop(k, None)
        if p is None:
            change = "added"
        elif p["fingerprint"] != r["fingerprint"]:
            change = "replaced"
        else:
            change = "unchanged"
        rows.append(
            {
                **{c: r[c] for c in key},
                "change": change,
                "files": r["files"],
                "bytes": r["bytes"],
                "newest": r["newest"],
                "previous_files": None if p is None else p["files"],
                "previous_bytes": None if p is None else p["bytes"],
                "previous_newest": None if p is None else p["newest"],
            }
        )
    for k, p in sorted(prev_index.items()):
        rows.append(
            {
                **dict(zip(key, k, strict=True)),
                "change": "removed",
                "files": 0,
                "bytes": 0,
                "newest": None,
                "previous_files": p["files"],
                "previous_bytes": p["bytes"],
                "previous_newest": p["newest"],
            }
        )
    df = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    for c in ("files", "bytes"):
        df[c] = df[c].astype("int64")
    for c in ("previous_files", "previous_bytes"):
        df[c] = df[c].astype("Int64")
    for c in ("newest", "previous_newest"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def previous_release(
    markers: Mapping[str, Mapping[str, Any]], release: str, explicit: str | None = None
) -> str | None:
    """The release to compare with: ``explicit`` (which must be complete), else the complete
    release (other than ``release``) completed most recently before it."""
    if explicit is not None:
        if explicit == release:
            raise ValueError(f"release {release} cannot be its own previous release")
        if explicit not in markers:
            raise ValueError(f"previous release {explicit} is not a complete release")
        return explicit
    mine = markers.get(release, {}).get("completed_at")
    candidates = [
        (m.get("completed_at") or "", name)
        for name, m in markers.items()
        if name != release and (mine is None or (m.get("completed_at") or "") < mine)
    ]
    return max(candidates)[1] if candidates else None


def table_bytes(df: pd.DataFrame, fmt: str) -> bytes:
    """A table as Parquet or CSV bytes (timestamps in ISO 8601, UTC)."""
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    if fmt == "csv":
        return df.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S%z").encode()
    raise ValueError(f"unknown table format {fmt!r}")


def _cell(v: Any) -> str:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    if isinstance(v, pd.Timestamp):
        return v.isoformat(timespec="seconds")
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, columns: Sequence[str] | None = None, limit: int = 50) -> str:
    """A GitHub-style markdown table of the first ``limit`` rows."""
    columns = list(columns or df.columns)
    if df.empty:
        return "_(no rows)_"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in df[columns].head(limit).to_dict("records"):
        lines.append("| " + " | ".join(_cell(r[c]) for c in columns) + " |")
    if len(df) > limit:
        lines.append(f"\n_{len(df) - limit} more row(s) not shown_")
    return "\n".join(lines)
