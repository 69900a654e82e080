"""Release staging logic (pure, no Dagster, no I/O): the release spec, QC criteria on
``scans.tsv`` rows, the choice of release-ready sessions and files, rebuilt TSVs and the squash
of per-session derivative folders.

**QC criteria** have the shape the HBCD scripts use: ``{"HBCD_compliant": ["Yes", "equals"],
"QU_motion": [2, "less_than"]}``; operators are :data:`QC_OPERATORS`. A missing column or a
*missing value* (``n/a``, ``_NaN_``, ``_Inf_``, ``NaN``, ``inf``, empty; see
:data:`MISSING_VALUES`) fails every criterion, ``not_equals``/``not_in`` included: a file whose
QC is unknown is not release-ready. ``equals``/``not_equals`` with a string threshold compare
strings exactly (after stripping spaces), with a number numerically (``"3.0"`` equals ``3``).

**Selection** (:func:`select_release`) works on a listing of the de-identified root (paths
relative to it: ``assembly_bids/...``, ``derivatives/...``) and the text of a few small files
(:func:`texts_needed`), and returns one :class:`Decision` per session, per session and pipeline,
and per file, each with the reason it is in or out:

* a session is release-ready when its label is in ``spec.sessions`` (if given), it has a
  ``scans.tsv`` with a ``filename`` column, its subject is in ``participants.tsv`` and the
  session in ``sub-<RC>_sessions.tsv`` (when those exist), none of its files is younger than
  ``spec.min_file_age_hours``, and at least one ``scans.tsv`` row passes QC;
* a file listed in ``scans.tsv`` is kept when it passes the criteria of its datatype folder
  (``qc.default`` merged with ``qc.modalities[<datatype>]``), or when it fails them but
  processing was attempted with it (it is in a ``cbrain_misc`` input manifest of the session,
  of a pipeline in ``spec.keep_inputs_of`` when that is given); files sharing
  its stem (``.json``, ``.bval``, ``.bvec``...) or its entities (``_events.tsv``...) follow it;
  a data file that ``scans.tsv`` does not list has no QC values and is left out;
* for each pipeline in ``spec.pipelines`` a session's derivatives
  (``derivatives/ses-<L>/<pipeline>/sub-<RC>...``) are included when the session is, the
  pipeline's ``dataset_description.json`` has ``GeneratedBy``, none of the files is younger
  than the minimum age, the input manifest (if any) still matches the inputs (not stale), and
  the inputs pass ``qc.pipelines[<pipeline>]`` (which needs the manifest).

**Squash**: ``derivatives/ses-*/<pipeline>/rest`` becomes ``derivatives/<pipeline>/rest``. Two
sources of one destination are allowed only with identical content (e.g. the same
``dataset_description.json`` in every session folder); otherwise :class:`SquashConflictError`
names both.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aind_assets.hbcd.formats.tsv import parse_tsv, select_tsv_rows
from aind_assets.hbcd.manifests import (
    DEFAULT_IGNORED_SUFFIXES,
    DerivativeManifest,
    manifest_diff,
)

__all__ = [
    "DATA_EXTENSIONS",
    "Decision",
    "MISSING_VALUES",
    "QC_OPERATORS",
    "QcSpec",
    "ReleaseSpec",
    "SourceFile",
    "SquashConflictError",
    "SquashPlan",
    "criteria_check",
    "load_release_spec",
    "passes_qc",
    "qc_failures",
    "rebuild_dataset_description",
    "rebuild_participants_tsv",
    "rebuild_scans_tsv",
    "rebuild_sessions_tsv",
    "release_prefixes",
    "release_ready_files",
    "select_release",
    "squash_derivative_relpath",
    "squash_derivatives",
    "texts_needed",
    "validate_release_id",
]

RAW = "assembly_bids"
DERIV = "derivatives"
MANIFESTS = "cbrain_misc"

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
#: Extensions of data files (each needs its own ``scans.tsv`` row to be released).
DATA_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".edf", ".bdf", ".set", ".eeg", ".snirf")

_LABEL = re.compile(r"[A-Za-z0-9]+\Z")
_RELEASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
_PIPELINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


# --- QC --------------------------------------------------------------------------------------
def _missing(cell: str | None) -> bool:
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
    if _missing(cell):
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
            got = "missing" if _missing(shown) else repr(shown)
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


# --- the release spec --------------------------------------------------------------------------
def validate_release_id(release: str) -> str:
    if not isinstance(release, str) or not _RELEASE_ID.match(release):
        raise ValueError(
            f"release identifier {release!r} must be 1-100 characters of letters, digits, "
            "'.', '_' or '-', starting with a letter or digit (it is a folder name)"
        )
    return release


class QcSpec(BaseModel):
    """QC criteria: ``default`` for every ``scans.tsv`` row, ``modalities`` per datatype folder
    (``anat``, ``func``, ``fmap``, ``dwi``...; merged over ``default``), ``pipelines`` for the
    inputs of a pipeline's derivatives."""

    model_config = ConfigDict(extra="forbid")

    default: dict[str, Any] = Field(default_factory=dict)
    modalities: dict[str, dict[str, Any]] = Field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("default")
    @classmethod
    def _default(cls, v: dict[str, Any]) -> dict[str, Any]:
        return criteria_check(v, "qc.default")

    @field_validator("modalities", "pipelines")
    @classmethod
    def _nested(cls, v: dict[str, dict[str, Any]], info) -> dict[str, Any]:  # noqa: ANN001
        return {k: criteria_check(c, f"qc.{info.field_name}.{k}") for k, c in v.items()}

    def for_datatype(self, datatype: str) -> dict[str, tuple[Any, str]]:
        return {**self.default, **self.modalities.get(datatype, {})}


class ReleaseSpec(BaseModel):
    """What goes into one release (see ``aind_assets/hbcd/release/examples/release.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    release: str = Field(description="Release identifier: the folder under the staging root")
    description: str = ""
    dataset_name: str | None = Field(
        default=None, description="Name in rawdata/dataset_description.json (default: source's)"
    )
    sessions: list[str] | None = Field(
        default=None, description="Session labels to release (V02 or ses-V02); None: all"
    )
    min_file_age_hours: float = Field(
        default=0, ge=0, description="Files younger than this keep their session out"
    )
    qc: QcSpec = Field(default_factory=QcSpec)
    pipelines: list[str] = Field(default_factory=list, description="Derivatives to include")
    keep_inputs_of: list[str] | None = Field(
        default=None,
        description="Pipelines whose input manifests keep a below-QC file in the release "
        "(None: every pipeline with a manifest, i.e. any attempted processing)",
    )
    previous_release: str | None = Field(
        default=None, description="Release to diff against (default: the latest complete one)"
    )
    bids_ignore: list[str] = Field(
        default_factory=list,
        description="Glob patterns (relative to <release>/hbcd/) the BIDS path check skips",
    )

    @field_validator("release")
    @classmethod
    def _release(cls, v: str) -> str:
        return validate_release_id(v)

    @field_validator("previous_release")
    @classmethod
    def _previous(cls, v: str | None) -> str | None:
        return None if v is None else validate_release_id(v)

    @field_validator("sessions")
    @classmethod
    def _sessions(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        out = []
        for s in v:
            label = str(s).removeprefix("ses-")
            if not _LABEL.match(label):
                raise ValueError(f"session label {s!r} must be letters and digits")
            out.append(label)
        return out

    @field_validator("pipelines", "keep_inputs_of")
    @classmethod
    def _pipelines(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        for p in v:
            if not _PIPELINE.match(p) or p == MANIFESTS:
                raise ValueError(f"pipeline {p!r} is not a derivative folder name")
        if len(set(v)) != len(v):
            raise ValueError("pipelines are listed more than once")
        return v

    def criteria_for(self, datatype: str) -> dict[str, tuple[Any, str]]:
        return self.qc.for_datatype(datatype)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class _SpecLoader(yaml.SafeLoader):
    """YAML 1.2 booleans only: ``Yes``/``No``/``on``/``off`` stay strings (``HBCD_compliant:
    [Yes, equals]`` must compare with the string ``Yes``)."""


_SpecLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_release_spec(text: str | bytes, source: str = "<release spec>") -> ReleaseSpec:
    """Parse a YAML (or JSON) release spec; errors name ``source`` and the field."""
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a release spec is a mapping with at least 'release'")
    try:
        return ReleaseSpec.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(spec)'}: {err['msg']}"
            for err in e.errors()
        )
        raise ValueError(f"{source}: invalid release spec: {problems}") from None


# --- TSV / JSON rebuilding -------------------------------------------------------------------
def rebuild_scans_tsv(scans_tsv: str, keep_filenames: Iterable[str]) -> str:
    """``scans.tsv`` with only the rows of files included in the release."""
    keep = set(keep_filenames)
    return select_tsv_rows(scans_tsv, lambda r: r.get("filename") in keep)


def rebuild_sessions_tsv(sessions_tsv: str, keep_sessions: Iterable[str]) -> str:
    """``sessions.tsv`` with only the released sessions (``V02`` or ``ses-V02``)."""
    keep = {s if s.startswith("ses-") else f"ses-{s}" for s in keep_sessions}
    return select_tsv_rows(sessions_tsv, lambda r: r.get("session_id") in keep)


def rebuild_participants_tsv(participants_tsv: str, keep_subjects: Iterable[str]) -> str:
    """``participants.tsv`` with only the released participants (``RC`` or ``sub-RC``)."""
    keep = {s if s.startswith("sub-") else f"sub-{s}" for s in keep_subjects}
    return select_tsv_rows(participants_tsv, lambda r: r.get("participant_id") in keep)


def rebuild_dataset_description(
    source_json: str | None, spec: ReleaseSpec, generated_by: Mapping[str, Any]
) -> str:
    """The raw dataset's ``dataset_description.json``: the source's fields, ``Name`` from the
    spec if given, ``DatasetType`` raw, a ``BIDSVersion``, and this step in ``GeneratedBy``
    (no timestamps: the same inputs give the same bytes)."""
    desc: dict[str, Any] = {}
    if source_json:
        try:
            loaded = json.loads(source_json)
        except ValueError:
            raise ValueError("assembly_bids/dataset_description.json is not valid JSON") from None
        if not isinstance(loaded, dict):
            raise ValueError("assembly_bids/dataset_description.json is not a JSON object")
        desc.update(loaded)
    desc["Name"] = spec.dataset_name or desc.get("Name") or f"HBCD release {spec.release}"
    desc.setdefault("BIDSVersion", "1.9.0")
    desc["DatasetType"] = "raw"
    previous = [g for g in desc.get("GeneratedBy") or [] if isinstance(g, dict)]
    desc["GeneratedBy"] = [
        *[g for g in previous if g.get("Name") != generated_by.get("Name")],
        dict(generated_by),
    ]
    return json.dumps(desc, indent=4, sort_keys=False) + "\n"


def prune_intended_for(sidecar: str, subject: str, removed: Iterable[str]) -> str | None:
    """A fieldmap sidecar without the ``IntendedFor`` targets the release leaves out.

    ``removed`` holds paths relative to the subject folder (``ses-V02/func/…_bold.nii.gz``);
    targets may be written that way or as BIDS URIs (``bids::sub-X/ses-V02/func/…``). Returns
    the new JSON, without ``IntendedFor`` when nothing is left, or ``None`` when nothing changes
    (the file is then copied byte for byte). A dangling target is a BIDS error.
    """
    gone = set(removed)
    try:
        meta = json.loads(sidecar)
    except ValueError:
        return None  # not ours to fix; the validity check reports broken JSON
    if not isinstance(meta, dict) or "IntendedFor" not in meta:
        return None
    targets = meta["IntendedFor"]
    listed = [targets] if isinstance(targets, str) else list(targets or [])

    def in_subject(target: Any) -> str:
        path = str(target).removeprefix("bids::")
        return path.removeprefix(f"{subject}/")

    kept = [t for t in listed if in_subject(t) not in gone]
    if len(kept) == len(listed):
        return None
    if kept:  # (a single string target is either kept, returned above, or gone)
        meta["IntendedFor"] = kept
    else:
        del meta["IntendedFor"]
    return json.dumps(meta, indent=4) + "\n"


# --- squash ----------------------------------------------------------------------------------
class SquashConflictError(ValueError):
    """Two sessions write the same derivative path with different content."""

    def __init__(self, dest: str, sources: Sequence[str]):
        self.dest, self.sources = dest, list(sources)
        super().__init__(
            f"squash conflict: {dest} is written by both {sources[0]} and {sources[1]}"
            + (f" (and {len(sources) - 2} more)" if len(sources) > 2 else "")
            + " with different content; fix the derivatives or leave one session out"
        )


def squash_derivative_relpath(relpath: str) -> str | None:
    """``ses-<label>/<pipeline>/rest`` -> ``<pipeline>/rest`` (relative to the derivatives
    root); ``None`` for ``cbrain_misc`` and for paths outside a ``ses-*`` folder."""
    parts = relpath.strip("/").split("/")
    if len(parts) < 3 or not parts[0].startswith("ses-") or parts[1] == MANIFESTS:
        return None
    return "/".join(parts[1:])


@dataclass
class SquashPlan:
    mapping: dict[str, str] = field(default_factory=dict)  # release relpath -> source relpath
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # identical sources per dest


def squash_derivatives(
    relpaths: Iterable[str], same_content: Callable[[str, str], bool] | None = None
) -> SquashPlan:
    """Plan the squash of ``ses-*/<pipeline>/...`` into ``<pipeline>/...``. When several
    sessions provide one destination, ``same_content(a, b)`` must say they are identical (the
    first in sorted order is used and the others are listed in ``duplicates``); otherwise (or
    with no ``same_content``) :class:`SquashConflictError` names both sources."""
    plan = SquashPlan()
    for src in sorted(relpaths):
        dst = squash_derivative_relpath(src)
        if dst is None:
            continue
        if dst in plan.mapping:
            first = plan.mapping[dst]
            if same_content is None or not same_content(first, src):
                raise SquashConflictError(dst, [first, src])
            plan.duplicates.setdefault(dst, [first]).append(src)
            continue
        plan.mapping[dst] = src
    return plan


def release_prefixes(release: str) -> tuple[str, str]:
    """``(<release>/hbcd/rawdata/, <release>/hbcd/derivatives/)`` in the staging bucket."""
    release = release.strip("/")
    if not release or "/" in release:
        raise ValueError("release identifier must be a single path segment")
    return f"{release}/hbcd/rawdata/", f"{release}/hbcd/derivatives/"


# --- selection -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceFile:
    """One object of the de-identified root (``relpath`` relative to it)."""

    relpath: str
    size: int
    etag: str | None
    last_modified: datetime


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


_SES_FILE = re.compile(r"sub-([A-Za-z0-9]+)/ses-([A-Za-z0-9]+)/(.+)\Z")
_SUB_FILE = re.compile(r"sub-([A-Za-z0-9]+)/([^/]+)\Z")
_DERIV_FILE = re.compile(r"ses-([A-Za-z0-9]+)/([^/]+)/(.+)\Z")
_SUBJECT_OWNED = re.compile(r"sub-([A-Za-z0-9]+)(?=[/._]|\Z)")


def _stem(name: str) -> str:
    return name.split(".", 1)[0]


def _entities(stem: str) -> str:
    """``sub-A_ses-B_task-rest_run-1_bold`` -> ``sub-A_ses-B_task-rest_run-1``."""
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def _is_data(name: str) -> bool:
    return name.lower().endswith(DATA_EXTENSIONS)


def _session_key(rc: str, label: str) -> str:
    return f"sub-{rc}_ses-{label}"


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
            if (name.endswith("_sessions.tsv") and _SUB_FILE.match(rel[len(RAW) + 1 :])) or (
                name.endswith("_scans.tsv") and _SES_FILE.match(rel[len(RAW) + 1 :])
            ):
                out.append(rel)
        elif rel.startswith(f"{DERIV}/"):
            m = _DERIV_FILE.match(rel[len(DERIV) + 1 :])
            if not m:
                continue
            is_manifest = m[2] == MANIFESTS and rel.endswith(".json")
            if is_manifest or (m[2] in pipelines and m[3] == "dataset_description.json"):
                out.append(rel)
    return sorted(out)


def _manifest_relpaths(text: str, rc: str, label: str) -> dict[str, Any]:
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


def _generated_by_ok(text: str | None) -> bool:
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


@dataclass
class _Session:
    rc: str
    label: str
    files: dict[str, SourceFile] = field(default_factory=dict)  # path inside session folder

    @property
    def key(self) -> str:
        return _session_key(self.rc, self.label)


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
    sessions: dict[tuple[str, str], _Session] = {}
    deriv: list[SourceFile] = []
    for f in files:
        if f.relpath.startswith(f"{RAW}/"):
            rel = f.relpath[len(RAW) + 1 :]
            if m := _SES_FILE.match(rel):
                s = sessions.setdefault((m[1], m[2]), _Session(m[1], m[2]))
                s.files[m[3]] = f
            elif m := _SUB_FILE.match(rel):
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
        m = _DERIV_FILE.match(f.relpath[len(DERIV) + 1 :])
        if not m or m[2] != MANIFESTS:
            continue
        mm = re.fullmatch(r"sub-([A-Za-z0-9]+)_(.+)_ses-([A-Za-z0-9]+)\.json", m[3])
        if not mm or mm[3] != m[1]:
            continue
        key = (mm[1], mm[3], mm[2])  # rc, label, pipeline
        try:
            manifests[key] = _manifest_relpaths(texts[f.relpath], mm[1], mm[3])
        except (KeyError, ValueError) as e:
            manifest_errors[key] = f"input manifest {f.relpath} unreadable ({type(e).__name__})"

    used: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for (rc, label, pipeline), entries in manifests.items():
        if spec.keep_inputs_of is not None and pipeline not in spec.keep_inputs_of:
            continue
        for path in entries:
            used[(rc, label)][path].append(pipeline)

    # -- sessions
    released: dict[tuple[str, str], _Session] = {}
    scans_rows: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    for key in sorted(sessions):
        s = sessions[key]
        rc, label = key
        base = {
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
        decisions, passing = [], 0
        if not reason:
            decisions, passing = _session_files(spec, s, rows, used.get(key, {}))
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
    for f in top:
        name = f.relpath[len(RAW) + 1 :]
        if not released:
            out.append(file_row(f, kind="raw", reason="no session is release-ready"))
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
        _derivatives(spec, deriv, texts, released, manifests, manifest_errors, scans_rows, cutoff)
    )
    return out


def _session_files(
    spec: ReleaseSpec,
    s: _Session,
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
    for filename, row in rows.items():
        datatype = filename.split("/", 1)[0] if "/" in filename else ""
        failures = qc_failures(row, spec.criteria_for(datatype))
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
        by_stem[f"{folder}/{_stem(name)}"] = filename
        by_entities[f"{folder}/{_entities(_stem(name))}"].append(filename)
    unlisted_data = {
        f"{p.rpartition('/')[0]}/{_stem(p.rpartition('/')[2])}"
        for p in s.files
        if _is_data(p) and p not in rows
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
        stem = f"{folder}/{_stem(name)}"
        owner = by_stem.get(stem)
        if owner is None and stem in unlisted_data and not _is_data(name):
            out.append(row(False, "belongs to a data file not listed in scans.tsv"))
            continue
        if owner is None and not _is_data(name):
            group = by_entities.get(f"{folder}/{_entities(_stem(name))}", [])
            if group:
                kept = [g for g in group if verdict[g][0]]
                owner = kept[0] if kept else group[0]
        if owner is not None:
            ok = verdict[owner][0]
            out.append(row(ok, "" if ok else f"belongs to excluded {owner}"))
        elif _is_data(name):
            out.append(row(False, "data file not listed in scans.tsv (no QC values)"))
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


def _derivatives(
    spec: ReleaseSpec,
    deriv: Sequence[SourceFile],
    texts: Mapping[str, str],
    released: Mapping[tuple[str, str], _Session],
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
        m = _DERIV_FILE.match(f.relpath[len(DERIV) + 1 :])
        if not m or m[2] not in wanted:
            continue
        label, pipeline, rest = m[1], m[2], m[3]
        if sm := _SUBJECT_OWNED.match(rest):
            owned[(sm[1], label, pipeline)].append((rest, f))
        else:
            level[(label, pipeline)].append((rest, f))

    description_ok = {
        (label, p): _generated_by_ok(texts.get(f"{DERIV}/ses-{label}/{p}/dataset_description.json"))
        for (label, p) in level.keys() | {(k[1], k[2]) for k in owned}
    }
    included_levels: set[tuple[str, str]] = set()
    for rc, label, pipeline in sorted(
        owned.keys() | {(rc, label, p) for (rc, label) in released for p in spec.pipelines}
    ):
        entries = owned.get((rc, label, pipeline), [])
        base = {
            "session": _session_key(rc, label),
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
            reason = _pipeline_inputs_problem(
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


def _pipeline_inputs_problem(
    spec: ReleaseSpec,
    pipeline: str,
    manifest: Mapping[str, Any] | None,
    session: _Session,
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
