"""BIDS validity of a staged release (pure: a list of paths and a way to read small files).

A release is ``<release>/hbcd/`` holding two kinds of BIDS datasets: ``rawdata/`` (raw) and
``derivatives/<pipeline>/`` (one derivative dataset per pipeline). Paths given to
:func:`validate_release` are relative to ``hbcd/``. Rules:

* **names** (``bids-path``): every ``rawdata`` file passes ``bids_validator.BIDSValidator``
  (the PyPI ``bids-validator`` package); every derivative file matches the BIDS schema's
  derivative, common or raw file rules (``bidsschematools``, the schema the validator ships
  with). Dot files, ``.bidsignore`` patterns of the dataset and the release's own ignore
  patterns are skipped;
* **labels** (``entity-labels``): a file under ``sub-<A>/ses-<B>/`` is named ``sub-<A>_ses-<B>_…``;
* **participants** (``participants``): ``participants.tsv`` has ``participant_id`` first, values
  ``sub-<alnum>``, one row per subject folder and a folder per row;
* **sessions** (``sessions``): each ``sub-<A>_sessions.tsv`` has ``session_id`` first, values
  ``ses-<alnum>``, one row per session folder and a folder per row;
* **scans** (``scans``): each ``scans.tsv`` has ``filename`` first, one row per file (no
  duplicate, every data file of the session listed once) and every listed file present;
* **dataset descriptions** (``dataset-description``): ``rawdata`` has one with ``Name`` and
  ``BIDSVersion``; every derivative dataset has one with a non-empty ``GeneratedBy``;
* **derivative sessions** (``derivative-session``): derivatives of ``sub-<A>/ses-<B>`` only for
  sessions present in ``rawdata``;
* **fieldmaps** (``intended-for``): every ``IntendedFor`` target of a ``fmap/`` sidecar (relative
  to the subject folder, or a ``bids::`` URI) is a file of the release.

:func:`files_read` lists the files the rules read, so a caller can fetch them concurrently.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aind_assets.hbcd.formats.tsv import parse_tsv
from aind_assets.hbcd.release.spec import DATA_EXTENSIONS

__all__ = [
    "Problem",
    "bids_path_ok",
    "derivative_path_ok",
    "files_read",
    "format_problems",
    "validate_release",
]

_PARTICIPANT = re.compile(r"sub-[A-Za-z0-9]+\Z")
_SESSION = re.compile(r"ses-[A-Za-z0-9]+\Z")
_SES_PATH = re.compile(r"(?:.*/)?sub-([A-Za-z0-9]+)/ses-([A-Za-z0-9]+)/(.+)\Z")
_SUB_PATH = re.compile(r"(?:.*/)?sub-([A-Za-z0-9]+)/(.+)\Z")
_FMAP_SIDECAR = re.compile(r"rawdata/(sub-[^/]+)/(?:ses-[^/]+/)?fmap/[^/]+\.json\Z")


def files_read(paths: Iterable[str]) -> list[str]:
    """The files :func:`validate_release` reads among ``paths``: tables, dataset descriptions,
    ``.bidsignore`` and fieldmap sidecars."""
    return [
        p
        for p in paths
        if p.endswith(
            ("/participants.tsv", "_sessions.tsv", "_scans.tsv", "/dataset_description.json")
        )
        or p.endswith("/.bidsignore")
        or _FMAP_SIDECAR.match(p)
    ]


@dataclass(frozen=True)
class Problem:
    path: str  # relative to <release>/hbcd/
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: [{self.rule}] {self.message}"


@functools.cache
def _raw_validator():
    from bids_validator import BIDSValidator

    return BIDSValidator(index_associated=False)


@functools.cache
def _derivative_regexes() -> tuple[re.Pattern, ...]:
    import bidsschematools.rules
    import bidsschematools.schema

    schema = bidsschematools.schema.load_schema()
    out = []
    for group in (schema.rules.files.common, schema.rules.files.deriv, schema.rules.files.raw):
        for entry in bidsschematools.rules.regexify_filename_rules(group, schema, level=2):
            out.append(re.compile(entry["regex"]))
    return tuple(out)


def bids_path_ok(path: str) -> bool:
    """A raw-dataset path (relative to the dataset root) is a valid BIDS name."""
    return bool(_raw_validator().is_bids("/" + path.lstrip("/")))


def derivative_path_ok(path: str) -> bool:
    """A derivative-dataset path (relative to its root) matches a BIDS schema file rule."""
    path = path.lstrip("/")
    return any(rx.fullmatch(path) for rx in _derivative_regexes())


def _ignored(path: str, patterns: Iterable[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    for pat in patterns:
        pat = pat.strip()
        if not pat or pat.startswith("#"):
            continue
        pat = pat.lstrip("/")
        if pat.endswith("/"):
            if path.startswith(pat) or f"/{pat}" in f"/{path}":
                return True
            continue
        if pat.startswith("**/"):
            pat = pat[3:]
        if ("/" in pat and fnmatch.fnmatch(path, pat)) or fnmatch.fnmatch(name, pat):
            return True
        if "/" in pat and fnmatch.fnmatch(path, pat + "/*"):
            return True
    return False


def _name_problems(
    root: str,
    path: str,
    dataset_ignore: Sequence[str],
    release_ignore: Sequence[str],
    out: list[Problem],
    *,
    derivative: bool,
) -> None:
    """The name rules for one file of the dataset at ``root`` (``path`` relative to it): skipped
    when a dot file or ignored by the dataset's ``.bidsignore`` or the release's patterns."""
    full = f"{root}/{path}"
    if path.rsplit("/", 1)[-1].startswith(".") or _ignored(path, dataset_ignore):
        return
    if _ignored(full, release_ignore):
        return
    if derivative and not derivative_path_ok(path):
        out.append(Problem(full, "bids-path", "not a valid BIDS derivative path"))
    if not derivative and not bids_path_ok(path):
        out.append(Problem(full, "bids-path", "not a valid BIDS path (bids-validator)"))
    if why := _label_problem(path):
        out.append(Problem(full, "entity-labels", why))


def _label_problem(path: str) -> str | None:
    m = _SES_PATH.match(path)
    if m:
        name = m[3].rsplit("/", 1)[-1]
        if not name.startswith(f"sub-{m[1]}_ses-{m[2]}_"):
            return f"file in sub-{m[1]}/ses-{m[2]}/ is not named sub-{m[1]}_ses-{m[2]}_…"
        return None
    m = _SUB_PATH.match(path)
    if m:
        name = m[2].rsplit("/", 1)[-1]
        if not name.startswith(f"sub-{m[1]}_") and not name.startswith(f"sub-{m[1]}."):
            return f"file in sub-{m[1]}/ is not named sub-{m[1]}_…"
    return None


def _tsv(path: str, read_text: Callable[[str], str], out: list[Problem], first: str):
    try:
        table = parse_tsv(read_text(path))
    except (ValueError, UnicodeError, OSError) as e:
        out.append(Problem(path, "tsv", f"unreadable: {e}"))
        return None
    if not table.columns or table.columns[0] != first:
        out.append(Problem(path, "tsv", f"first column must be {first!r}"))
        return None
    return table


def _description(
    path: str, read_text: Callable[[str], str], out: list[Problem], *, derivative: bool
) -> None:
    try:
        desc = json.loads(read_text(path))
    except FileNotFoundError:
        out.append(Problem(path, "dataset-description", "missing"))
        return
    except (ValueError, UnicodeError, OSError) as e:
        out.append(Problem(path, "dataset-description", f"not valid JSON ({e})"))
        return
    if not isinstance(desc, dict):
        out.append(Problem(path, "dataset-description", "not a JSON object"))
        return
    for key in ("Name", "BIDSVersion"):
        if not desc.get(key):
            out.append(Problem(path, "dataset-description", f"no {key}"))
    if derivative:
        gen = desc.get("GeneratedBy")
        if not (
            isinstance(gen, list)
            and gen
            and all(isinstance(g, dict) and g.get("Name") for g in gen)
        ):
            out.append(
                Problem(path, "dataset-description", "derivative dataset without GeneratedBy")
            )


def validate_release(
    paths: Iterable[str],
    read_text: Callable[[str], str],
    *,
    ignore: Sequence[str] = (),
) -> list[Problem]:
    """Problems of a staged release (empty list = valid). ``paths``: every file under
    ``<release>/hbcd/``, relative to it; ``read_text(path)`` returns a file's text (raises
    ``FileNotFoundError`` for a missing one); ``ignore``: glob patterns relative to ``hbcd/``
    skipped by the name rules."""
    paths = sorted(set(paths))
    present = set(paths)
    out: list[Problem] = []

    raw = [p[len("rawdata/") :] for p in paths if p.startswith("rawdata/")]
    deriv: dict[str, list[str]] = defaultdict(list)
    for p in paths:
        if p.startswith("derivatives/"):
            rest = p[len("derivatives/") :]
            pipeline, _, inner = rest.partition("/")
            if inner:
                deriv[pipeline].append(inner)
            else:
                out.append(Problem(p, "layout", "file directly under derivatives/"))
        elif not p.startswith("rawdata/"):
            out.append(Problem(p, "layout", "outside rawdata/ and derivatives/"))
    if not raw:
        out.append(Problem("rawdata/", "layout", "no rawdata"))
        return out

    def read_ignore(dataset: str) -> list[str]:
        if f"{dataset}/.bidsignore" not in present:
            return []
        return read_text(f"{dataset}/.bidsignore").splitlines()

    # -- rawdata names and labels
    raw_ignore = read_ignore("rawdata")
    for p in raw:
        _name_problems("rawdata", p, raw_ignore, ignore, out, derivative=False)
    _description("rawdata/dataset_description.json", read_text, out, derivative=False)

    # -- tabular rules
    subjects = {p.split("/", 1)[0] for p in raw if p.startswith("sub-") and "/" in p}
    sessions: dict[str, set[str]] = defaultdict(set)
    for p in raw:
        parts = p.split("/")
        if len(parts) >= 3 and parts[0].startswith("sub-") and parts[1].startswith("ses-"):
            sessions[parts[0]].add(parts[1])

    if "participants.tsv" in raw:
        path = "rawdata/participants.tsv"
        table = _tsv(path, read_text, out, "participant_id")
        if table is not None:
            seen: set[str] = set()
            for i, v in enumerate(table.column("participant_id"), start=2):
                if not _PARTICIPANT.match(v):
                    out.append(Problem(path, "participants", f"line {i}: not sub-<alnum>"))
                elif v in seen:
                    out.append(Problem(path, "participants", f"line {i}: {v} listed twice"))
                elif v not in subjects:
                    out.append(Problem(path, "participants", f"line {i}: {v} has no folder"))
                seen.add(v)
            for s in sorted(subjects - seen):
                out.append(Problem(path, "participants", f"{s} has no row"))

    for sub in sorted(subjects):
        name = f"{sub}/{sub}_sessions.tsv"
        if name not in raw:
            continue
        path = f"rawdata/{name}"
        table = _tsv(path, read_text, out, "session_id")
        if table is None:
            continue
        seen = set()
        for i, v in enumerate(table.column("session_id"), start=2):
            if not _SESSION.match(v):
                out.append(Problem(path, "sessions", f"line {i}: not ses-<alnum>"))
            elif v in seen:
                out.append(Problem(path, "sessions", f"line {i}: {v} listed twice"))
            elif v not in sessions[sub]:
                out.append(Problem(path, "sessions", f"line {i}: {v} has no folder"))
            seen.add(v)
        for s in sorted(sessions[sub] - seen):
            out.append(Problem(path, "sessions", f"{s} has no row"))

    for sub in sorted(sessions):
        for ses in sorted(sessions[sub]):
            folder = f"{sub}/{ses}/"
            name = f"{folder}{sub}_{ses}_scans.tsv"
            data = {
                p[len(folder) :]
                for p in raw
                if p.startswith(folder)
                and p.count("/") == 3
                and p.lower().endswith(DATA_EXTENSIONS)
            }
            if name not in raw:
                continue
            path = f"rawdata/{name}"
            table = _tsv(path, read_text, out, "filename")
            if table is None:
                continue
            seen = set()
            for i, v in enumerate(table.column("filename"), start=2):
                if v in seen:
                    out.append(Problem(path, "scans", f"line {i}: {v} listed twice"))
                elif f"{folder}{v}" not in present and f"rawdata/{folder}{v}" not in present:
                    out.append(Problem(path, "scans", f"line {i}: {v} is listed but missing"))
                seen.add(v)
            for f in sorted(data - seen):
                out.append(Problem(path, "scans", f"{f} has no row"))

    # -- fieldmaps point at files of the release
    raw_files = set(raw)
    for p in raw:
        full = f"rawdata/{p}"
        if not (m := _FMAP_SIDECAR.match(full)):
            continue
        try:
            meta = json.loads(read_text(full))
        except ValueError:
            out.append(Problem(full, "json", "not valid JSON"))
            continue
        targets = meta.get("IntendedFor") if isinstance(meta, dict) else None
        for target in [targets] if isinstance(targets, str) else targets or []:
            target = str(target)
            if target.startswith("bids:") and not target.startswith("bids::"):
                continue  # another dataset's file: not ours to resolve
            rel = (
                target.removeprefix("bids::") if target.startswith("bids::") else f"{m[1]}/{target}"
            )
            if rel not in raw_files:
                out.append(
                    Problem(full, "intended-for", f"IntendedFor {target} is not in the release")
                )

    # -- derivative datasets
    raw_sessions = {f"{s}/{x}" for s in sessions for x in sessions[s]}
    for pipeline, pipeline_files in sorted(deriv.items()):
        root = f"derivatives/{pipeline}"
        if "dataset_description.json" not in pipeline_files:
            out.append(
                Problem(f"{root}/dataset_description.json", "dataset-description", "missing")
            )
        else:
            _description(f"{root}/dataset_description.json", read_text, out, derivative=True)
        d_ignore = read_ignore(root)
        for p in pipeline_files:
            full = f"{root}/{p}"
            m = _SES_PATH.match(p)
            if m and f"sub-{m[1]}/ses-{m[2]}" not in raw_sessions:
                out.append(
                    Problem(
                        full,
                        "derivative-session",
                        f"sub-{m[1]}/ses-{m[2]} is not in rawdata",
                    )
                )
            _name_problems(root, p, d_ignore, ignore, out, derivative=True)
    return out


def format_problems(problems: Sequence[Problem], limit: int = 20) -> str:
    lines = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return "\n".join(lines)
