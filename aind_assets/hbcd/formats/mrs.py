"""NIfTI-MRS (pure; streaming): MR spectroscopy in NIfTI-2/NIfTI-1 with a JSON header
extension (ecode 44) that carries DICOM-derived fields.

The file is rewritten like any NIfTI (:func:`~aind_assets.hbcd.formats.nifti.rewrite_nifti`:
header string fields, extensions, voxel data streamed unchanged), and the JSON header
extension is parsed and rewritten with the sidecar rules of
:mod:`~aind_assets.hbcd.formats.json_sidecar`: ``PatientName``, ``PatientID``,
``PatientBirthDate``, ``Institution*`` removed at any depth, every other key and string
through the token rules; numbers untouched. A text extension or header field that is not a
JSON object goes through the token rules as for NIfTI.

Which files: ``*_svs``, ``*_mrsi``, ``*_unloc``, ``*_mrsref`` NIfTI files and any NIfTI under an
``mrs/`` folder (:func:`is_mrs_name`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aind_assets.hbcd.formats.base import FileHandler, FormatContext
from aind_assets.hbcd.formats.json_sidecar import json_walk
from aind_assets.hbcd.formats.nifti import NIFTI_CLEAR_FIELDS, rewrite_nifti
from aind_assets.hbcd.streams import ReadableBinary, WritableBinary

__all__ = ["MRS", "MRS_SUFFIXES", "is_mrs_name", "mrs_header_text"]

MRS_SUFFIXES = ("svs", "mrsi", "unloc", "mrsref")
_MRS_NAME = re.compile(r"(?:^|/)(?:mrs/[^/]*|[^/]*_(?:svs|mrsi|unloc|mrsref))\.nii(?:\.gz)?\Z")


def is_mrs_name(relpath: str) -> bool:
    return bool(_MRS_NAME.search(relpath.lower()))


def mrs_header_text(value: str, ctx: FormatContext) -> str:
    """A NIfTI-MRS text (header field or extension): a JSON object through the sidecar rules
    (compact, as NIfTI-MRS writers store it), anything else through the token rules."""
    stripped = value.strip()
    if stripped.startswith("{"):
        try:
            obj: Any = json.loads(stripped)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            return json.dumps(json_walk(obj, ctx), ensure_ascii=False)
    return ctx.translator.text(value)


def run_mrs(src: ReadableBinary, dst: WritableBinary, ctx: FormatContext) -> None:
    rewrite_nifti(
        src,
        dst,
        text=lambda value: mrs_header_text(value, ctx),
        clear_fields=NIFTI_CLEAR_FIELDS if ctx.deidentify else frozenset(),
        drop_binary_extensions=ctx.deidentify,
        notes=ctx.notes,
    )


MRS = FileHandler("nifti-mrs", run_mrs)
