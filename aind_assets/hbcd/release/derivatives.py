"""Which derivatives a release takes (pure): for each pipeline in ``spec.pipelines`` a session's
derivatives (``derivatives/ses-<L>/<pipeline>/sub-<RC>...``) are included when the session is, the
pipeline's ``dataset_description.json`` has ``GeneratedBy``, none of the files is younger than the
minimum age, the input manifest (if any) still matches the inputs (not stale), and the inputs
pass ``qc.pipelines[<pipeline>]`` (which needs the manifest).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from aind_assets.hbcd.manifests import (
    DEFAULT_IGNORED_SUFFIXES,
    DerivativeManifest,
    manifest_diff,
)
from aind_assets.hbcd.release.decisions import (
    DERIV_FILE,
    SUBJECT_OWNED,
    Decision,
    PipelineColumns,
    SessionInfo,
    SourceFile,
    session_key,
)
from aind_assets.hbcd.release.qc import qc_failures
from aind_assets.hbcd.release.spec import DERIV, ReleaseSpec


def manifest_relpaths(text: str, rc: str, label: str) -> dict[str, Any]:
    """Manifest entries keyed by path inside the session folder (``anat/x.nii.gz``)."""
    marker = f"sub-{rc}/ses-{label}/"
    out = {}
    for e in DerivativeManifest.parse(text).entries:
        key = e.Key
        i = key.find(marker)
        while i > 0 and key[i - 1] != "/":
            i = key.find(marker, i + 1)
        if i < 0:
            continue
        out[key[i + len(marker) :]] = e
    return out


def generated_by_ok(text: str | None) -> bool:
    if text is None:
        return False
    try:
        desc = json.loads(text)
    except ValueError:
        return False
    gen = desc.get("GeneratedBy") if isinstance(desc, dict) else None
    return (
        isinstance(gen, list)
        and bool(gen)
        and all(isinstance(g, dict) and g.get("Name") for g in gen)
    )


def select_derivatives(
    spec: ReleaseSpec,
    deriv: Sequence[SourceFile],
    texts: Mapping[str, str],
    released: Mapping[tuple[str, str], SessionInfo],
    manifests: Mapping[tuple[str, str, str], Mapping[str, Any]],
    manifest_errors: Mapping[tuple[str, str, str], str],
    scans_rows: Mapping[tuple[str, str], Mapping[str, Mapping[str, str]]],
    cutoff: datetime,
) -> list[Decision]:
    out: list[Decision] = []
    wanted = set(spec.pipelines)
    # (label, pipeline) -> files at the pipeline root; (rc, label, pipeline) -> subject files
    level: dict[tuple[str, str], list[tuple[str, SourceFile]]] = defaultdict(list)
    owned: dict[tuple[str, str, str], list[tuple[str, SourceFile]]] = defaultdict(list)
    for f in deriv:
        m = DERIV_FILE.match(f.relpath[len(DERIV) + 1 :])
        if not m or m[2] not in wanted:
            continue
        label, pipeline, rest = m[1], m[2], m[3]
        if sm := SUBJECT_OWNED.match(rest):
            owned[(sm[1], label, pipeline)].append((rest, f))
        else:
            level[(label, pipeline)].append((rest, f))

    description_ok = {
        (label, p): generated_by_ok(texts.get(f"{DERIV}/ses-{label}/{p}/dataset_description.json"))
        for (label, p) in level.keys() | {(k[1], k[2]) for k in owned}
    }
    included_levels: set[tuple[str, str]] = set()
    for rc, label, pipeline in sorted(
        owned.keys() | {(rc, label, p) for (rc, label) in released for p in spec.pipelines}
    ):
        entries = owned.get((rc, label, pipeline), [])
        base: PipelineColumns = {
            "session": session_key(rc, label),
            "subject": f"sub-{rc}",
            "session_label": f"ses-{label}",
            "pipeline": pipeline,
        }
        key = (rc, label)
        reason = ""
        if key not in released:
            reason = "session not released"
        elif not entries:
            reason = "no derivatives"
        elif not description_ok.get((label, pipeline)):
            reason = (
                f"{DERIV}/ses-{label}/{pipeline}/dataset_description.json missing or "
                "without GeneratedBy"
            )
        elif (newest := max(f.last_modified for _, f in entries)) > cutoff:
            reason = (
                f"derivatives modified within {spec.min_file_age_hours:g} h "
                f"(newest {newest.isoformat(timespec='seconds')})"
            )
        elif (rc, label, pipeline) in manifest_errors:
            reason = manifest_errors[(rc, label, pipeline)]
        else:
            reason = pipeline_inputs_problem(
                spec,
                pipeline,
                manifests.get((rc, label, pipeline)),
                released[key],
                scans_rows.get(key, {}),
            )
        out.append(Decision(kind="pipeline", included=not reason, reason=reason, **base))
        for rest, f in entries:
            out.append(
                Decision(
                    kind="derivative",
                    source=f.relpath,
                    dest="" if reason else f"derivatives/{pipeline}/{rest}",
                    size=f.size,
                    etag=f.etag or "",
                    last_modified=f.last_modified,
                    included=not reason,
                    action="" if reason else "copy",
                    reason=reason,
                    **base,
                )
            )
        if not reason:
            included_levels.add((label, pipeline))
    for (label, pipeline), entries in sorted(level.items()):
        ok = (label, pipeline) in included_levels
        for rest, f in entries:
            out.append(
                Decision(
                    kind="derivative",
                    session_label=f"ses-{label}",
                    pipeline=pipeline,
                    source=f.relpath,
                    dest=f"derivatives/{pipeline}/{rest}" if ok else "",
                    size=f.size,
                    etag=f.etag or "",
                    last_modified=f.last_modified,
                    included=ok,
                    action="copy" if ok else "",
                    reason="" if ok else f"no released session has {pipeline} for ses-{label}",
                )
            )
    return out


def pipeline_inputs_problem(
    spec: ReleaseSpec,
    pipeline: str,
    manifest: Mapping[str, Any] | None,
    session: SessionInfo,
    rows: Mapping[str, Mapping[str, str]],
) -> str:
    """Why a session's pipeline derivatives are left out ("" when they are not): stale inputs
    or inputs failing the pipeline's QC criteria."""
    criteria = spec.qc.pipelines.get(pipeline)
    if manifest is None:
        return f"no input manifest for {pipeline}: cannot check its inputs" if criteria else ""
    current = [
        {"Key": path, "Size": f.size, **({"ETag": f.etag} if f.etag else {})}
        for path, f in session.files.items()
        if path in manifest
    ]
    diff = manifest_diff(
        [e.model_copy(update={"Key": k}) for k, e in manifest.items()],
        current,
        ignored_suffixes=DEFAULT_IGNORED_SUFFIXES,
    )
    if diff.stale:
        changed = diff.removed + diff.resized + diff.etag_changed
        return (
            f"derivatives are stale: {len(changed)} input(s) changed or removed since "
            f"processing (e.g. {changed[0]})"
        )
    if criteria:
        for path in sorted(manifest):
            if path in rows:
                failures = qc_failures(rows[path], criteria)
                if failures:
                    return f"input {path} fails {pipeline} QC: {'; '.join(failures)}"
    return ""
