"""Which handler de-identifies (and re-identifies) a BIDS file, by type (pure; no Dagster).
Each format lives in its own module of this package; this one picks between them.

Every handler reads a binary stream and writes a binary stream, with bounded memory except
JSON (sidecars are parsed whole). The set of handlers is an allow-list: :func:`handler_for`
returns ``None`` for anything the rules cannot de-identify (``.dcm``, ``.zip``, ``.pdf``,
unknown binaries); such files are not copied and are reported.

=========================  =================================================================
file                       rule
=========================  =================================================================
``*.tsv``                  cells kept as strings; only ID columns (:data:`ID_COLUMNS`) and site
                           columns (:data:`SITE_COLUMNS`) rewritten; rows whose
                           ``participant_id`` is not mapped are dropped (noted)
``*.json``                 :data:`DROP_JSON_KEYS` removed at any depth; ``IntendedFor``
                           (string/list, ``bids::`` URIs too) as paths; every other key and
                           string value (incl. ``Levels``) through the token rules; written
                           back as UTF-8, 4-space indent; numbers untouched
``*.nii`` / ``*.nii.gz``   header ``descrip``/``intent_name`` rewritten (cleared if too long),
                           ``aux_file``/``db_name``/``data_type``/``unused_str`` cleared; text
                           extensions rewritten, binary extensions (e.g. DICOM) dropped; voxel
                           data streamed unchanged; ``.nii.gz`` keeps its deflate stream when
                           the header needs no change (:mod:`.nifti_gz`), else igzip
text (see TEXT_EXTENSIONS) encoding detected (BOMs, UTF-16, else UTF-8 that round-trips any
                           byte) and kept; identifiers replaced token-wise
``*.edf`` / ``*.bdf``       patient/recording identification, signal labels, transducer,
                           prefiltering and EDF+/BDF+ annotations rewritten in place (fixed
                           width); samples byte for byte (:mod:`.eeg`)
``*.vhdr`` / ``*.vmrk``    BrainVision header/markers: text rules (``DataFile``/``MarkerFile``
                           names, comments, marker descriptions)
``*.eeg`` / ``*.fdt``      header-less samples: byte for byte (refused if it looks like text)
``*.set``                  EEGLAB (MATLAB v5): every char array, variable and field name
                           through the token rules, ``filepath`` cleared; numbers bit-identical;
                           container re-written by scipy (:mod:`.eeglab`); v7.3 refused
NIfTI-MRS                  ``*_svs|_mrsi|_unloc|_mrsref.nii[.gz]`` or under ``mrs/``: NIfTI rules
                           plus the ecode-44 JSON extension through the sidecar rules (:mod:`.mrs`)
``*.<allowed>.gz``         same rule inside; re-compressed without FNAME, mtime 0
=========================  =================================================================

``.csv`` is treated as free text (every token, numeric cells included), unlike ``.tsv``.
Errors never contain identifier values: paths in messages are de-identified ones.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aind_assets.hbcd.formats.base import (
    CHUNK,
    DeidentificationError,
    FileHandler,
    FormatContext,
    UnsupportedFileType,
)
from aind_assets.hbcd.formats.eeg import EDF, RAW_SAMPLES
from aind_assets.hbcd.formats.eeglab import EEGLAB_SET
from aind_assets.hbcd.formats.errors import describe_foreign_error
from aind_assets.hbcd.formats.gz import GzipFormatError, gzipped
from aind_assets.hbcd.formats.json_sidecar import JSON
from aind_assets.hbcd.formats.mrs import MRS, is_mrs_name
from aind_assets.hbcd.formats.nifti import NIFTI, NiftiFormatError
from aind_assets.hbcd.formats.nifti_gz import NIFTI_GZ
from aind_assets.hbcd.formats.text import (
    TEXT,
    TEXT_EXTENSIONS,
    TEXT_NAMES,
)
from aind_assets.hbcd.formats.tsv import TSV
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import (
    UnmappedIdentifierError,
    deidentifier,
    deidentify_path,
    reidentifier,
    reidentify_path,
)
from aind_assets.hbcd.streams import ReadableBinary, WritableBinary
from aind_assets.resources.links import link_refusal

MRS_GZ = FileHandler("nifti-mrs.gz", gzipped(MRS.run))
#: EEG and other binary formats, by extension (see formats/eeg.py); BrainVision headers and
#: markers (.vhdr/.vmrk, INI-like text naming the data and marker files) follow the text rules.
_BINARY_EXTENSIONS = {
    ".edf": EDF,
    ".bdf": EDF,
    ".eeg": RAW_SAMPLES,
    ".fdt": RAW_SAMPLES,
    ".set": EEGLAB_SET,
}
_EEG_TEXT_EXTENSIONS = (".vhdr", ".vmrk")
_GZ = {h.name: FileHandler(h.name + ".gz", gzipped(h.run)) for h in (TSV, JSON, TEXT)}


def _simple_handler(lower_name: str) -> FileHandler | None:
    if lower_name.endswith(".tsv"):
        return TSV
    if lower_name.endswith(".json"):
        return JSON
    if lower_name.endswith(_EEG_TEXT_EXTENSIONS):
        return TEXT
    dot = lower_name.rfind(".")
    ext = lower_name[dot:] if dot > 0 else ""
    if ext in TEXT_EXTENSIONS or lower_name in TEXT_NAMES:
        return TEXT
    return None


def handler_for(relpath: str) -> FileHandler | None:
    """The allow-list: the handler for a file name, or ``None`` (do not copy; report)."""
    name = relpath.rsplit("/", 1)[-1].lower()
    if is_mrs_name(relpath):
        return MRS_GZ if name.endswith(".gz") else MRS
    dot = name.rfind(".")
    if dot > 0 and name[dot:] in _BINARY_EXTENSIONS:
        return _BINARY_EXTENSIONS[name[dot:]]
    if name.endswith(".nii.gz"):
        return NIFTI_GZ
    if name.endswith(".nii"):
        return NIFTI
    if name.endswith(".gz"):
        inner = _simple_handler(name[:-3])
        return _GZ[inner.name] if inner else None
    return _simple_handler(name)


# --- dispatch ----------------------------------------------------------------------------

_OWN_ERRORS = (DeidentificationError, NiftiFormatError, GzipFormatError, UnmappedIdentifierError)


def _run(
    handler: FileHandler,
    src: ReadableBinary,
    dst: WritableBinary,
    ctx: FormatContext,
    shown_path: str,
) -> None:
    try:
        handler.run(src, dst, ctx)
    except _OWN_ERRORS as e:
        raise DeidentificationError(f"{shown_path}: {handler.name}: {e}") from None
    except (ValueError, EOFError, OSError, zlib.error, UnicodeError) as e:
        # foreign messages may quote content: say what is wrong in our own words
        raise DeidentificationError(
            f"{shown_path}: {handler.name}: {describe_foreign_error(e)}"
        ) from None


def deidentify_file(
    relpath: str,
    src_fileobj: ReadableBinary,
    dst_fileobj: WritableBinary,
    idmap: IdentityMap,
    *,
    notes: list[str] | None = None,
    outcomes: list[str] | None = None,
) -> str:
    """De-identify one file; returns its de-identified relative path.

    Raises :class:`UnmappedIdentifierError` (subject not in the map), :class:`UnsupportedFileType`
    (not in the allow-list; nothing written) or :class:`DeidentificationError` (bad content;
    ``dst`` holds partial output and must be discarded). Notes (no identifiers) about dropped
    keys/rows/extensions are appended to ``notes``; how the file was written (e.g. a NIfTI-gz
    whose deflate stream was copied through: :mod:`.nifti_gz`) to ``outcomes``.
    """
    new = deidentify_path(relpath, idmap)
    handler = handler_for(relpath)
    if handler is None:
        raise UnsupportedFileType(f"not in the de-identification allow-list: {new}")
    ctx = FormatContext(deidentifier(idmap), True, idmap, notes if notes is not None else [])
    if outcomes is not None:
        ctx.outcomes = outcomes
    _run(handler, src_fileobj, dst_fileobj, ctx, new)
    return new


def reidentify_file(
    relpath: str,
    src_fileobj: ReadableBinary,
    dst_fileobj: WritableBinary,
    idmap: IdentityMap,
    *,
    notes: list[str] | None = None,
) -> str:
    """Reverse flow (de-identified derivatives -> identified side): RC -> DCCID, anonymized
    site -> site in the path and in handled content. Files without a handler are copied
    byte for byte (no privacy constraint in this direction). Returns the new relative path."""
    new = reidentify_path(relpath, idmap)
    handler = handler_for(relpath)
    if handler is None:
        shutil.copyfileobj(src_fileobj, dst_fileobj, CHUNK)
        return new
    ctx = FormatContext(reidentifier(idmap), False, idmap, notes if notes is not None else [])
    _run(handler, src_fileobj, dst_fileobj, ctx, relpath)
    return new


def deidentify_nifti_stream(
    src_fileobj: ReadableBinary, dst_fileobj: WritableBinary, idmap: IdentityMap, gz: bool
) -> list[str]:
    """De-identify a NIfTI stream (``gz``: gzip in and out, no FNAME). Returns notes."""
    ctx = FormatContext(deidentifier(idmap), True, idmap, [])
    _run(NIFTI_GZ if gz else NIFTI, src_fileobj, dst_fileobj, ctx, "<nifti stream>")
    return ctx.notes


def deidentify_bytes(relpath: str, data: bytes, idmap: IdentityMap) -> tuple[str, bytes]:
    """Convenience for small files: ``(new_relpath, new_bytes)``."""
    out = io.BytesIO()
    new = deidentify_file(relpath, io.BytesIO(data), out, idmap)
    return new, out.getvalue()


def reidentify_bytes(relpath: str, data: bytes, idmap: IdentityMap) -> tuple[str, bytes]:
    out = io.BytesIO()
    new = reidentify_file(relpath, io.BytesIO(data), out, idmap)
    return new, out.getvalue()


# --- local trees (demo, tests, local processing) -----------------------------------------


@dataclass(frozen=True)
class SkippedFile:
    path: str  # de-identified path, or "<unmapped:hash>" when the path itself can't be
    reason: str


@dataclass
class TreeReport:
    written: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)


def _path_token(relpath: str) -> str:
    return "<unmapped:" + hashlib.sha256(relpath.encode()).hexdigest()[:12] + ">"


def _walk(root: Path) -> Iterator[str]:
    """Files below ``root``, and symbolic links that are not folders (checked by the caller)."""
    for p in sorted(root.rglob("*")):
        if p.is_file() or (p.is_symlink() and not p.is_dir()):
            yield p.relative_to(root).as_posix()


def deidentify_tree(src_root: Path, dst_root: Path, idmap: IdentityMap) -> TreeReport:
    """De-identify every file under ``src_root`` into ``dst_root`` (local paths). Unsupported,
    unmapped, colliding or unreadable files are skipped and reported; a failed file leaves
    nothing behind."""
    report = TreeReport()
    seen: set[str] = set()
    for rel in _walk(src_root):
        try:
            new = deidentify_path(rel, idmap)
        except UnmappedIdentifierError:
            report.skipped.append(SkippedFile(_path_token(rel), "subject not in identity map"))
            continue
        refusal = link_refusal(str(src_root / rel), str(src_root))
        if refusal is not None:
            report.skipped.append(SkippedFile(new, refusal))
            continue
        if handler_for(rel) is None:
            report.skipped.append(SkippedFile(new, "file type not in allow-list"))
            continue
        if new in seen:
            report.skipped.append(SkippedFile(new, "collides with another de-identified file"))
            continue
        seen.add(new)
        target = dst_root / new
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        notes: list[str] = []
        try:
            with open(src_root / rel, "rb") as src, open(tmp, "wb") as dst:
                deidentify_file(rel, src, dst, idmap, notes=notes)
        except (DeidentificationError, OSError) as e:
            tmp.unlink(missing_ok=True)
            # OSError messages quote the identified path: report the type only
            reason = str(e) if isinstance(e, DeidentificationError) else type(e).__name__
            report.skipped.append(SkippedFile(new, reason))
            continue
        tmp.replace(target)
        report.written.append(new)
        if notes:
            report.notes[new] = notes
    return report


def reidentify_tree(src_root: Path, dst_root: Path, idmap: IdentityMap) -> TreeReport:
    report = TreeReport()
    for rel in _walk(src_root):
        new = reidentify_path(rel, idmap)
        target = dst_root / new
        target.parent.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        with open(src_root / rel, "rb") as src, open(target, "wb") as dst:
            reidentify_file(rel, src, dst, idmap, notes=notes)
        report.written.append(new)
        if notes:
            report.notes[new] = notes
    return report
