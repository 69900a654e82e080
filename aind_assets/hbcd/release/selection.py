"""Selection of release-ready sessions and files (pure). :func:`select_release` works on a listing
of the de-identified root (paths relative to it: ``assembly_bids/...``, ``derivatives/...``) and
the text of a few small files (:func:`texts_needed`), and returns one :class:`Decision` per
session, per session and pipeline, and per file, each with the reason it is in or out:

* a session is release-ready when its label is in ``spec.sessions`` (if given), it has a
  ``scans.tsv`` with a ``filename`` column, its subject is in ``participants.tsv`` and the
  session in ``sub-<RC>_sessions.tsv`` (when those exist), none of its files is younger than
  ``spec.min_file_age_hours``, and at least one ``scans.tsv`` row passes QC;
* a file listed in ``scans.tsv`` is kept when it passes the criteria of its datatype folder
  (``qc.default`` merged with ``qc.modalities[<datatype>]``), or when it fails them but
  processing was attempted with it (it is in a ``cbrain_misc`` input manifest of the session,
  of a pipeline in ``spec.keep_inputs_of`` when that is given); files sharing its stem
  (``.json``, ``.bval``, ``.bvec``...) or its entities (``_events.tsv``...) follow it; a data
  file that ``scans.tsv`` does not list has no QC values and is left out;
* derivatives: see :mod:`~aind_assets.hbcd.release.derivatives`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aind_assets.hbcd.formats.tsv import parse_tsv
from aind_assets.hbcd.release.decisions import (
    DERIV_FILE,
    SES_FILE,
    SUB_FILE,
    Decision,
    SessionColumns,
    SessionInfo,
    SourceFile,
    entities_of,
    file_stem,
    is_data_file,
)
from aind_assets.hbcd.release.derivatives import manifest_relpaths, select_derivatives
from aind_assets.hbcd.release.qc import qc_failures
from aind_assets.hbcd.release.spec import DERIV, MANIFESTS, RAW, ReleaseSpec


# --- selection -------------------------------------------------------------------------------
def texts_needed(files: Iterable[SourceFile], spec: ReleaseSpec) -> list[str]:
    """The small files :func:`select_release` reads: ``participants.tsv``,
    ``dataset_description.json``, every ``sessions.tsv`` and ``scans.tsv``, every input
    manifest, and the ``dataset_description.json`` of each wanted pipeline per session label."""
    out = []
    pipelines = set(spec.pipelines)
    for f in files:
        rel = f.relpath
        if rel in (f"{RAW}/participants.tsv", f"{RAW}/dataset_description.json"):
            out.append(rel)
        elif rel.startswith(f"{RAW}/"):
            name = rel.rsplit("/", 1)[-1]
            if (name.endswith("_sessions.tsv") and SUB_FILE.match(rel[len(RAW) + 1 :])) or (
                name.endswith("_scans.tsv") and SES_FILE.match(rel[len(RAW) + 1 :])
            ):
                out.append(rel)
        elif rel.startswith(f"{DERIV}/"):
            m = DERIV_FILE.match(rel[len(DERIV) + 1 :])
            if not m:
                continue
            is_manifest = m[2] == MANIFESTS and rel.endswith(".json")
            if is_manifest or (m[2] in pipelines and m[3] == "dataset_description.json"):
                out.append(rel)
    return sorted(out)


def select_release(
    spec: ReleaseSpec,
    files: Iterable[SourceFile],
    texts: Mapping[str, str],
    now: datetime | None = None,
) -> list[Decision]:
    """Decide, with reasons, what the release contains (see module docstring). ``files``: the
    listing of the de-identified root; ``texts``: contents of :func:`texts_needed`."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(hours=spec.min_file_age_hours)
    files = sorted(files, key=lambda f: f.relpath)
    out: list[Decision] = []

    def file_row(f: SourceFile, **kw: Any) -> Decision:
        return Decision(
            source=f.relpath,
            size=f.size,
            etag=f.etag or "",
            last_modified=f.last_modified,
            **kw,
        )

    # -- index the raw side
    top: list[SourceFile] = []
    subject_files: dict[str, list[SourceFile]] = defaultdict(list)
    sessions: dict[tuple[str, str], SessionInfo] = {}
    deriv: list[SourceFile] = []
    for f in files:
        if f.relpath.startswith(f"{RAW}/"):
            rel = f.relpath[len(RAW) + 1 :]
            if m := SES_FILE.match(rel):
                s = sessions.setdefault((m[1], m[2]), SessionInfo(m[1], m[2]))
                s.files[m[3]] = f
            elif m := SUB_FILE.match(rel):
                subject_files[m[1]].append(f)
            elif "/" not in rel:
                top.append(f)
            else:
                out.append(
                    file_row(f, kind="raw", reason="not a top-level, subject or session file")
                )
        elif f.relpath.startswith(f"{DERIV}/"):
            deriv.append(f)

    participants_text = texts.get(f"{RAW}/participants.tsv")
    participants: set[str] | None = None
    if participants_text is not None:
        try:
            participants = set(parse_tsv(participants_text).column("participant_id"))
        except ValueError as e:
            raise ValueError(f"{RAW}/participants.tsv: {e}") from None

    # -- manifests: which files processing used, per session and pipeline
    manifests: dict[tuple[str, str, str], dict[str, Any]] = {}
    manifest_errors: dict[tuple[str, str, str], str] = {}
    for f in deriv:
        m = DERIV_FILE.match(f.relpath[len(DERIV) + 1 :])
        if not m or m[2] != MANIFESTS:
            continue
        mm = re.fullmatch(r"sub-([A-Za-z0-9]+)_(.+)_ses-([A-Za-z0-9]+)\.json", m[3])
        if not mm or mm[3] != m[1]:
            continue
        mkey = (mm[1], mm[3], mm[2])  # rc, label, pipeline
        try:
            manifests[mkey] = manifest_relpaths(texts[f.relpath], mm[1], mm[3])
        except (KeyError, ValueError) as e:
            manifest_errors[mkey] = f"input manifest {f.relpath} unreadable ({type(e).__name__})"

    used: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for (rc, label, pipeline), entries in manifests.items():
        if spec.keep_inputs_of is not None and pipeline not in spec.keep_inputs_of:
            continue
        for path in entries:
            used[(rc, label)][path].append(pipeline)

    # -- sessions
    released: dict[tuple[str, str], SessionInfo] = {}
    scans_rows: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    for key in sorted(sessions):
        s = sessions[key]
        rc, label = key
        base: SessionColumns = {
            "session": s.key,
            "subject": f"sub-{rc}",
            "session_label": f"ses-{label}",
        }
        scans_name = f"sub-{rc}_ses-{label}_scans.tsv"
        reason = ""
        rows: dict[str, dict[str, str]] = {}
        if spec.sessions is not None and label not in spec.sessions:
            reason = "session label not in the release spec"
        elif scans_name not in s.files:
            reason = f"no {scans_name}"
        else:
            try:
                table = parse_tsv(texts[s.files[scans_name].relpath])
            except (KeyError, ValueError) as e:
                table = None
                reason = f"{scans_name} unreadable ({e})"
            if table is not None and (not table.columns or table.columns[0] != "filename"):
                reason = f"{scans_name} does not have 'filename' as its first column"
            elif table is not None:
                for r in table.rows:
                    rows.setdefault(r["filename"], r)
        if not reason and participants is not None and f"sub-{rc}" not in participants:
            reason = "subject not in participants.tsv"
        if not reason:
            sessions_tsv = f"{RAW}/sub-{rc}/sub-{rc}_sessions.tsv"
            if sessions_tsv in texts:
                try:
                    listed = set(parse_tsv(texts[sessions_tsv]).column("session_id"))
                except ValueError as e:
                    raise ValueError(f"{sessions_tsv}: {e}") from None
                if f"ses-{label}" not in listed:
                    reason = f"session not in sub-{rc}_sessions.tsv"
        if not reason and s.files:
            newest = max(f.last_modified for f in s.files.values())
            if newest > cutoff:
                reason = (
                    f"files modified within {spec.min_file_age_hours:g} h "
                    f"(newest {newest.isoformat(timespec='seconds')})"
                )
        decisions: list[Decision] = []
        passing = 0
        if not reason:
            decisions, passing = session_files(spec, s, rows, used.get(key, {}))
            if not passing:
                reason = "no file passes QC"
        if reason:
            out.append(Decision(kind="session", reason=reason, **base))
            for f in s.files.values():
                out.append(
                    file_row(f, kind="raw", reason=f"session not released: {reason}", **base)
                )
            continue
        released[key] = s
        scans_rows[key] = rows
        out.append(Decision(kind="session", included=True, **base))
        for d in decisions:
            d.session, d.subject, d.session_label = s.key, f"sub-{rc}", f"ses-{label}"
            out.append(d)

    # -- subject and top-level files
    released_subjects = {rc for rc, _ in released}
    for rc, fs in sorted(subject_files.items()):
        for f in fs:
            name = f.relpath.rsplit("/", 1)[-1]
            if rc not in released_subjects:
                out.append(
                    file_row(
                        f, kind="raw", subject=f"sub-{rc}", reason="subject has no released session"
                    )
                )
                continue
            action = "rebuild" if name == f"sub-{rc}_sessions.tsv" else "copy"
            out.append(
                file_row(
                    f,
                    kind="raw",
                    subject=f"sub-{rc}",
                    dest=f"rawdata/sub-{rc}/{name}",
                    included=True,
                    action=action,
                )
            )
    released_names = [d.dest.rsplit("/", 1)[-1] for d in out if d.included and d.kind == "raw"]
    released_names += [f"sub-{rc}_sessions.tsv" for rc in released_subjects]
    for f in top:
        name = f.relpath[len(RAW) + 1 :]
        if not released:
            out.append(file_row(f, kind="raw", reason="no session is release-ready"))
            continue
        if not top_level_sidecar_applies(name, released_names):
            out.append(
                file_row(
                    f, kind="raw", reason="top-level sidecar without a released file it applies to"
                )
            )
            continue
        action = "rebuild" if name in ("participants.tsv", "dataset_description.json") else "copy"
        out.append(file_row(f, kind="raw", dest=f"rawdata/{name}", included=True, action=action))
    if released and f"{RAW}/dataset_description.json" not in {f.relpath for f in top}:
        out.append(
            Decision(
                kind="raw",
                dest="rawdata/dataset_description.json",
                included=True,
                action="rebuild",
                reason="no source dataset_description.json: written from the spec",
            )
        )

    # -- derivatives
    out.extend(
        select_derivatives(
            spec, deriv, texts, released, manifests, manifest_errors, scans_rows, cutoff
        )
    )
    return out


_TOP_SIDECAR = re.compile(r"((?:[a-zA-Z]+-[a-zA-Z0-9]+_)*)([a-zA-Z0-9]+)\.(?:json|tsv)\Z")
_DATASET_FILES = frozenset(
    {"participants.tsv", "participants.json", "dataset_description.json", "samples.tsv"}
    | {"samples.json", "genetic_info.json"}
)


def top_level_sidecar_applies(name: str, released_names: Iterable[str]) -> bool:
    """A top-level file other than a sidecar (``README``, ``participants.tsv``...) always
    applies; a top-level sidecar (``dwi.json``, ``task-rest_bold.json``, ``scans.json``: the
    inheritance principle) only when a released file has its suffix and all its entities."""
    m = _TOP_SIDECAR.fullmatch(name)
    if name in _DATASET_FILES or m is None:
        return True
    entities = {e for e in m[1].split("_") if e}
    suffix = m[2]
    for other in released_names:
        stem = file_stem(other)
        parts = stem.split("_")
        if parts[-1] == suffix and entities <= set(parts[:-1]):
            return True
    return False


def session_files(
    spec: ReleaseSpec,
    s: SessionInfo,
    rows: Mapping[str, Mapping[str, str]],
    used: Mapping[str, list[str]],
) -> tuple[list[Decision], int]:
    """Decisions for the files of one session that is otherwise ready, and the number of
    present files that pass QC."""
    scans_name = f"sub-{s.rc}_ses-{s.label}_scans.tsv"
    prefix = f"rawdata/sub-{s.rc}/ses-{s.label}/"
    out: list[Decision] = []
    # files listed in scans.tsv decide for themselves
    verdict: dict[str, tuple[bool, str]] = {}  # path in session -> (included, reason)
    for filename, qc_row in rows.items():
        datatype = filename.split("/", 1)[0] if "/" in filename else ""
        failures = qc_failures(qc_row, spec.criteria_for(datatype))
        if not failures:
            verdict[filename] = (True, "")
        elif filename in used:
            pipelines = ", ".join(sorted(set(used[filename])))
            verdict[filename] = (
                True,
                f"below QC ({'; '.join(failures)}) but used by processing ({pipelines})",
            )
        else:
            verdict[filename] = (False, f"below QC: {'; '.join(failures)}")
    passing = sum(1 for f, (ok, why) in verdict.items() if ok and not why and f in s.files)
    by_stem: dict[str, str] = {}
    by_entities: dict[str, list[str]] = defaultdict(list)
    for filename in rows:
        folder, _, name = filename.rpartition("/")
        by_stem[f"{folder}/{file_stem(name)}"] = filename
        by_entities[f"{folder}/{entities_of(file_stem(name))}"].append(filename)
    unlisted_data = {
        f"{p.rpartition('/')[0]}/{file_stem(p.rpartition('/')[2])}"
        for p in s.files
        if is_data_file(p) and p not in rows
    }

    for path, f in sorted(s.files.items()):

        def row(included: bool, reason: str = "", action: str = "copy", f=f, path=path) -> Decision:
            return Decision(
                kind="raw",
                source=f.relpath,
                dest=prefix + path if included else "",
                size=f.size,
                etag=f.etag or "",
                last_modified=f.last_modified,
                included=included,
                action=action if included else "",
                reason=reason,
            )

        if path == scans_name:
            out.append(row(True, action="rebuild"))
            continue
        if path in verdict:
            out.append(row(*verdict[path]))
            continue
        folder, _, name = path.rpartition("/")
        if not folder:  # session-level file other than scans.tsv (scans.json...)
            out.append(row(True))
            continue
        if is_data_file(name):
            # a data file goes in only through its own scans.tsv row (an unlisted X.nii beside
            # a listed X.nii.gz is not a sidecar of it: the stem is cut at the first dot)
            out.append(row(False, "data file not listed in scans.tsv (no QC values)"))
            continue
        stem = f"{folder}/{file_stem(name)}"
        owner = by_stem.get(stem)
        if owner is None and stem in unlisted_data:
            out.append(row(False, "belongs to a data file not listed in scans.tsv"))
            continue
        if owner is None:
            group = by_entities.get(f"{folder}/{entities_of(file_stem(name))}", [])
            if group:
                kept = [g for g in group if verdict[g][0]]
                owner = kept[0] if kept else group[0]
        if owner is not None:
            ok = verdict[owner][0]
            out.append(row(ok, "" if ok else f"belongs to excluded {owner}"))
        else:
            out.append(row(False, "not associated with any file listed in scans.tsv"))
    for filename in rows:
        if filename not in s.files:
            out.append(
                Decision(
                    kind="raw",
                    source=f"{RAW}/sub-{s.rc}/ses-{s.label}/{filename}",
                    reason=f"listed in {scans_name} but missing",
                )
            )
    return out, passing
