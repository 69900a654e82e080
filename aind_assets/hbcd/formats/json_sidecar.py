"""JSON sidecars (pure): :data:`DROP_JSON_KEYS` removed at any depth; ``IntendedFor``
(string/list, ``bids::`` URIs too) rewritten as paths; every other key and string value
(``Levels`` included) through the token rules; written back as UTF-8 with a 4-space indent;
numbers untouched. Sidecars are parsed whole.
"""

from __future__ import annotations

import json
from typing import Any

from aind_assets.hbcd.formats.base import DeidentificationError, FileHandler, FormatContext
from aind_assets.hbcd.formats.text import detect_encoding
from aind_assets.hbcd.streams import ReadableBinary, WritableBinary

#: JSON keys removed from sidecars (at any depth).
DROP_JSON_KEYS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
    }
)


# --- JSON --------------------------------------------------------------------------------


def json_walk(obj: Any, ctx: FormatContext) -> Any:
    tr = ctx.translator.text
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if ctx.deidentify and k in DROP_JSON_KEYS:
                ctx.notes.append(f"JSON: dropped {k}")
                continue
            if k == "IntendedFor":
                if isinstance(v, str):
                    out[k] = ctx.translator.path(v)
                elif isinstance(v, list):
                    out[k] = [ctx.translator.path(p) if isinstance(p, str) else p for p in v]
                else:
                    out[k] = json_walk(v, ctx)
                continue
            out[tr(k)] = json_walk(v, ctx)
        return out
    if isinstance(obj, list):
        return [json_walk(v, ctx) for v in obj]
    if isinstance(obj, str):
        return tr(obj)
    return obj


def _run_json(src: ReadableBinary, dst: WritableBinary, ctx: FormatContext) -> None:
    data = src.read()
    enc = detect_encoding(data[:64])
    try:
        obj = json.loads(enc.decode(data))
    except ValueError:
        raise DeidentificationError("invalid JSON") from None
    out = json.dumps(json_walk(obj, ctx), indent=4, ensure_ascii=False) + "\n"
    dst.write(out.encode("utf-8", "surrogateescape"))


JSON = FileHandler("json", _run_json)
