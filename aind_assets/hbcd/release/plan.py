"""The staging plan (no Dagster): the de-identified side read, sessions selected, and one
:class:`PlannedFile` per file of the release (copied, rebuilt or squashed), with a fingerprint
that tells whether a staged release is still what the plan would make.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from aind_assets import lineage
from aind_assets.hbcd.deid.commit import require_committed
from aind_assets.hbcd.processing import imagestats
from aind_assets.hbcd.release.decisions import Decision, SourceFile
from aind_assets.hbcd.release.errors import StagingError
from aind_assets.hbcd.release.selection import select_release, texts_needed
from aind_assets.hbcd.release.spec import (
    DERIV,
    RAW,
    ReleaseSpec,
)
from aind_assets.hbcd.release.squash import SquashConflictError
from aind_assets.hbcd.release.tables import (
    prune_intended_for,
    rebuild_dataset_description,
    rebuild_participants_tsv,
    rebuild_scans_tsv,
    rebuild_sessions_tsv,
)
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url, relative_key

MARKER = "_COMPLETE"
RECORD = "processing.json"
TEMP_PREFIX = ".staging-"
HBCD = "hbcd"
CHUNK = 1 << 20
GENERATED_BY = {
    "Name": "aind-assets hbcd/release_staging",
    "Description": "HBCD release staging: QC selection, rebuilt TSVs, squashed derivatives",
    "CodeURL": lineage.CODE_URL,
}

DECISION_COLUMNS = [
    "kind",
    "session",
    "subject",
    "session_label",
    "pipeline",
    "source",
    "dest",
    "size",
    "etag",
    "last_modified",
    "included",
    "action",
    "reason",
]


# --- reading the de-identified side ----------------------------------------------------------
def list_deidentified(store: ObjectStoreResource, deid_root: str) -> list[SourceFile]:
    """Every object under ``<deid>/assembly_bids/`` and ``<deid>/derivatives/``."""
    prefixes = [join_url(deid_root, RAW), join_url(deid_root, DERIV)]
    out = []
    for infos in store.list_many(prefixes).values():
        for i in infos:
            out.append(SourceFile(relative_key(i.url, deid_root), i.size, i.etag, i.last_modified))
    return out


def read_texts(store: ObjectStoreResource, root: str, relpaths: Sequence[str]) -> dict[str, str]:
    """UTF-8 text of small files (concurrently); an undecodable one is an error naming it."""

    def one(rel: str) -> str:
        data = store.get_bytes(join_url(root, rel))
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError(f"{rel} is not UTF-8 text") from None

    return dict(zip(relpaths, store.map_concurrently(one, list(relpaths)), strict=True))


def select_sessions(
    store: ObjectStoreResource,
    spec: ReleaseSpec,
    deid_root: str,
    now: datetime | None = None,
) -> list[Decision]:
    """List the de-identified root, read what the selection needs, and select."""
    files = list_deidentified(store, deid_root)
    texts = read_texts(store, deid_root, texts_needed(files, spec))
    decisions = select_release(spec, files, texts, now=now)
    require_committed(store, deid_root, included_sessions(decisions), f"release {spec.release}")
    return decisions


def included_sessions(decisions: Iterable[Decision]) -> list[str]:
    return [d.session for d in decisions if d.kind == "session" and d.included]


def decisions_frame(decisions: Iterable[Decision]) -> pd.DataFrame:
    rows = [d.as_row() for d in decisions]
    df = pd.DataFrame(rows, columns=DECISION_COLUMNS)
    df["size"] = df["size"].astype("int64")
    df["included"] = df["included"].astype(bool)
    df["last_modified"] = pd.to_datetime(df["last_modified"], utc=True)
    for c in DECISION_COLUMNS:
        if c not in ("size", "included", "last_modified"):
            df[c] = df[c].fillna("").astype(str)
    return df


def frame_decisions(df: pd.DataFrame) -> list[Decision]:
    missing = [c for c in DECISION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"release selection table lacks column(s) {', '.join(missing)}")
    out = []
    for record in df[DECISION_COLUMNS].to_dict("records"):
        r: dict[str, Any] = {str(k): v for k, v in record.items()}  # the column names
        lm = r["last_modified"]
        r["last_modified"] = None if pd.isna(lm) else pd.Timestamp(lm).to_pydatetime()
        r["size"] = int(r["size"])
        r["included"] = bool(r["included"])
        out.append(Decision(**r))
    return out


# --- the plan ---------------------------------------------------------------------------------
@dataclass
class PlannedFile:
    """One file of the release; ``dest`` relative to ``<release>/hbcd/``. Copied files have a
    ``source`` (relative to the de-identified root); generated ones have ``content``."""

    dest: str
    source: str = ""
    size: int = 0
    etag: str = ""
    last_modified: datetime | None = None
    content: bytes | None = None
    identical_sources: list[str] = field(default_factory=list)

    def fingerprint(self) -> dict[str, Any]:
        if self.content is not None:
            return {"dest": self.dest, "sha256": hashlib.sha256(self.content).hexdigest()}
        return {"dest": self.dest, "source": self.source, "size": self.size, "etag": self.etag}


def sha256_of(store: ObjectStoreResource, url: str) -> str:
    h = hashlib.sha256()
    with store.open(url, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def plan_staging(
    store: ObjectStoreResource,
    spec: ReleaseSpec,
    decisions: Sequence[Decision],
    deid_root: str,
) -> list[PlannedFile]:
    """Files of the release from the selection: copies, and rebuilt ``participants.tsv``,
    ``sessions.tsv``, ``scans.tsv`` and ``dataset_description.json`` (read from the sources
    now). Several sources of one destination must have identical bytes
    (:class:`~aind_assets.hbcd.release.SquashConflictError` otherwise)."""
    included = [d for d in decisions if d.included and d.kind in ("raw", "derivative")]
    released_sessions = [d for d in decisions if d.kind == "session" and d.included]
    if not released_sessions:
        raise StagingError(
            f"no session is release-ready for release {spec.release}: see the reasons in "
            "hbcd/release_ready_sessions"
        )
    labels_by_subject: dict[str, set[str]] = defaultdict(set)
    for d in released_sessions:
        labels_by_subject[d.subject].add(d.session_label)
    files_by_session: dict[str, set[str]] = defaultdict(set)
    for d in included:
        if d.kind == "raw" and d.session and d.action == "copy":
            prefix = f"rawdata/{d.subject}/{d.session_label}/"
            files_by_session[d.session].add(d.dest[len(prefix) :])

    by_dest: dict[str, list[Decision]] = defaultdict(list)
    for d in included:
        if not d.dest:
            raise ValueError(f"selection row for {d.source or d.kind} is included without dest")
        by_dest[d.dest].append(d)

    rebuild = [ds[0] for ds in by_dest.values() if ds[0].action == "rebuild"]
    pruned = pruned_fieldmaps(store, deid_root, decisions)
    texts = read_texts(store, deid_root, [d.source for d in rebuild if d.source])
    plan: list[PlannedFile] = []
    for dest, ds in sorted(by_dest.items()):
        first = ds[0]
        content: bytes | None = None
        others: list[str] = []
        if first.action == "rebuild":
            text = texts.get(first.source) if first.source else None
            rebuilt = rebuilt_text(spec, first, text, labels_by_subject, files_by_session)
            content = rebuilt.encode("utf-8")
        elif first.action != "copy":
            raise ValueError(f"unknown action {first.action!r} for {dest}")
        elif first.source in pruned:
            content = pruned[first.source].encode("utf-8")
        elif len(ds) > 1:  # squashed: every session must hold the very same bytes
            ordered = sorted(ds, key=lambda d: d.source)
            first = ordered[0]
            digest = sha256_of(store, join_url(deid_root, first.source))
            for d in ordered[1:]:
                if d.size != first.size or sha256_of(store, join_url(deid_root, d.source)) != (
                    digest
                ):
                    raise SquashConflictError(dest, [first.source, d.source])
                others.append(d.source)
        plan.append(
            PlannedFile(
                dest=dest,
                source=first.source,
                size=first.size,
                etag=first.etag,
                last_modified=first.last_modified,
                content=content,
                identical_sources=others,
            )
        )
    return with_bidsignore(store, deid_root, [*spec.bids_ignore, *PIPELINE_BIDS_IGNORE], plan)


#: Ignore patterns (relative to ``hbcd/``) of the platform's own pipelines: outputs that are
#: not BIDS files, listed in the released pipeline dataset's ``.bidsignore`` (only when it is
#: released) so the official validator checks the rest of it.
PIPELINE_BIDS_IGNORE: tuple[str, ...] = tuple(
    f"derivatives/{imagestats.PIPELINE}/{p}" for p in imagestats.BIDS_IGNORE
)


def bidsignore_patterns(patterns: Sequence[str], datasets: Sequence[str]) -> dict[str, list[str]]:
    """The release's ignore patterns (relative to ``hbcd/``) as each dataset's ``.bidsignore``
    lines: ``rawdata/X`` -> ``X`` in ``rawdata``; ``derivatives/<glob>/X`` -> ``X`` in each
    pipeline the glob matches; a pattern naming no dataset goes to every dataset."""
    out: dict[str, list[str]] = {d: [] for d in datasets}
    for raw in patterns:
        pat = raw.strip().lstrip("/")
        if not pat or pat.startswith("#"):
            continue
        head, _, rest = pat.partition("/")
        if head == "rawdata" and rest:
            if "rawdata" in out:
                out["rawdata"].append(rest)
        elif head == "derivatives" and rest:
            glob, _, inner = rest.partition("/")
            for d in datasets:
                if d.startswith("derivatives/") and fnmatch.fnmatch(d.split("/", 1)[1], glob):
                    out[d].append(inner or "*")
        else:
            for lines in out.values():
                lines.append(pat)
    return {d: lines for d, lines in out.items() if lines}


def with_bidsignore(
    store: ObjectStoreResource, deid_root: str, patterns: Sequence[str], plan: list[PlannedFile]
) -> list[PlannedFile]:
    """``plan`` with each dataset's ``.bidsignore`` holding the release's ignore patterns
    (after the lines of a released source ``.bidsignore``), so the official validator skips
    what the spec ignores."""
    datasets = {"rawdata"} | {
        "/".join(p.dest.split("/")[:2]) for p in plan if p.dest.startswith("derivatives/")
    }
    wanted = bidsignore_patterns(patterns, sorted(datasets))
    if not wanted:
        return plan
    by_dest = {p.dest: p for p in plan}
    for dataset, lines in wanted.items():
        dest = f"{dataset}/.bidsignore"
        old = by_dest.get(dest)
        head = ""
        if old is not None:
            if old.content is not None:
                head = old.content.decode("utf-8", "surrogateescape")
            else:
                head = store.get_bytes(join_url(deid_root, old.source)).decode(
                    "utf-8", "surrogateescape"
                )
        have = set(head.splitlines())
        body = head + ("\n" if head and not head.endswith("\n") else "")
        body += "".join(f"{line}\n" for line in lines if line not in have)
        by_dest[dest] = PlannedFile(
            dest=dest,
            source=old.source if old is not None else "",
            content=body.encode("utf-8", "surrogateescape"),
        )
    return [by_dest[d] for d in sorted(by_dest)]


def pruned_fieldmaps(
    store: ObjectStoreResource, deid_root: str, decisions: Sequence[Decision]
) -> dict[str, str]:
    """Released fieldmap sidecars whose ``IntendedFor`` names a file left out, rewritten
    without it (source relpath -> new JSON). Only subjects that lose raw files are read."""
    removed: dict[str, set[str]] = defaultdict(set)
    for d in decisions:
        if d.kind == "raw" and not d.included and d.subject and d.source:
            removed[d.subject].add(d.source.removeprefix(f"{RAW}/{d.subject}/"))
    sidecars = [
        d
        for d in decisions
        if d.kind == "raw"
        and d.included
        and d.action == "copy"
        and d.subject in removed
        and "/fmap/" in d.source
        and d.source.endswith(".json")
    ]
    texts = read_texts(store, deid_root, [d.source for d in sidecars])
    out = {}
    for d in sidecars:
        new = prune_intended_for(texts[d.source], d.subject, removed[d.subject])
        if new is not None:
            out[d.source] = new
    return out


def rebuilt_text(
    spec: ReleaseSpec,
    d: Decision,
    text: str | None,
    labels_by_subject: Mapping[str, set[str]],
    files_by_session: Mapping[str, set[str]],
) -> str:
    name = d.dest.rsplit("/", 1)[-1]
    if d.dest == "rawdata/dataset_description.json":
        return rebuild_dataset_description(text, spec, GENERATED_BY)
    if text is None:
        raise ValueError(f"no source to rebuild {d.dest} from")
    if d.dest == "rawdata/participants.tsv":
        return rebuild_participants_tsv(text, labels_by_subject)
    if name.endswith("_sessions.tsv"):
        return rebuild_sessions_tsv(text, labels_by_subject.get(d.subject, set()))
    if name.endswith("_scans.tsv"):
        return rebuild_scans_tsv(text, files_by_session.get(d.session, set()))
    raise ValueError(f"do not know how to rebuild {d.dest}")


def plan_fingerprint(plan: Sequence[PlannedFile]) -> str:
    body = json.dumps([p.fingerprint() for p in sorted(plan, key=lambda p: p.dest)])
    return hashlib.sha256(body.encode()).hexdigest()
