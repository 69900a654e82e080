"""The vocabulary of release selection (pure): listed source files, the decisions taken on them
(with reasons), and how BIDS file names are read (subject, session, stem, entities).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from aind_assets.hbcd.release.spec import DATA_EXTENSIONS


# --- selection -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceFile:
    """One object of the de-identified root (``relpath`` relative to it)."""

    relpath: str
    size: int
    etag: str | None
    last_modified: datetime


class SessionColumns(TypedDict):
    """The :class:`Decision` fields shared by the rows of one session (``**``-passed)."""

    session: str
    subject: str
    session_label: str


class PipelineColumns(SessionColumns):
    """The :class:`Decision` fields shared by the rows of one session and pipeline."""

    pipeline: str


@dataclass
class Decision:
    """One row of the release selection.

    ``kind``: ``session`` (one per session), ``pipeline`` (one per session and pipeline),
    ``raw`` or ``derivative`` (files). ``dest`` is relative to ``<release>/hbcd/``; ``action``
    is ``copy`` or ``rebuild`` for included files (``""`` otherwise).
    """

    kind: str
    session: str = ""  # sub-<RC>_ses-<label> (the bids_sessions partition key), "" if none
    subject: str = ""  # sub-<RC>
    session_label: str = ""  # ses-<label>
    pipeline: str = ""
    source: str = ""
    dest: str = ""
    size: int = 0
    etag: str = ""
    last_modified: datetime | None = None
    included: bool = False
    action: str = ""
    reason: str = ""

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


SES_FILE = re.compile(r"sub-([A-Za-z0-9]+)/ses-([A-Za-z0-9]+)/(.+)\Z")
SUB_FILE = re.compile(r"sub-([A-Za-z0-9]+)/([^/]+)\Z")
DERIV_FILE = re.compile(r"ses-([A-Za-z0-9]+)/([^/]+)/(.+)\Z")
SUBJECT_OWNED = re.compile(r"sub-([A-Za-z0-9]+)(?=[/._]|\Z)")


def file_stem(name: str) -> str:
    return name.split(".", 1)[0]


def entities_of(stem: str) -> str:
    """``sub-A_ses-B_task-rest_run-1_bold`` -> ``sub-A_ses-B_task-rest_run-1``."""
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def is_data_file(name: str) -> bool:
    return name.lower().endswith(DATA_EXTENSIONS)


def session_key(rc: str, label: str) -> str:
    return f"sub-{rc}_ses-{label}"


@dataclass
class SessionInfo:
    rc: str
    label: str
    files: dict[str, SourceFile] = field(default_factory=dict)  # path inside session folder

    @property
    def key(self) -> str:
        return session_key(self.rc, self.label)
