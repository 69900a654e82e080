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


class _DuplicateKey(ValueError):
    pass


class _NonFinite(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _NonFinite(name)


def parse_sidecar(text: str, translate: Any = None) -> Any:
    """Strict JSON: the error says where (line, column) and what (no content quoted, except a
    duplicated key shown through ``translate``, the de-identifying token rules)."""
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except json.JSONDecodeError as e:
        raise DeidentificationError(
            f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except _DuplicateKey as e:
        key = str(e.args[0])
        try:
            shown = repr(translate(key)) if translate is not None else "a key"
        except Exception:  # noqa: BLE001 - an untranslatable key is not shown
            shown = "a key"
        raise DeidentificationError(
            f"invalid JSON: duplicate key {shown} in one object (which value is meant?)"
        ) from None
    except _NonFinite as e:
        raise DeidentificationError(
            f"invalid JSON: {e.args[0]} is not a JSON number (write null or a finite number)"
        ) from None


def _run_json(src: ReadableBinary, dst: WritableBinary, ctx: FormatContext) -> None:
    data = src.read()
    if not data.strip():
        raise DeidentificationError("empty JSON file (no value)")
    enc = detect_encoding(data[:64])
    body = data[len(enc.bom) :] if enc.bom and data.startswith(enc.bom) else data
    try:
        text = body.decode(enc.codec)  # strict: a JSON sidecar is text in one encoding
    except UnicodeDecodeError as e:
        raise DeidentificationError(
            f"not valid {e.encoding} text: undecodable byte at offset {e.start} (JSON sidecars "
            "are UTF-8)"
        ) from None
    obj = parse_sidecar(text, ctx.translator.text)
    out = json.dumps(json_walk(obj, ctx), indent=4, ensure_ascii=False) + "\n"
    dst.write(out.encode("utf-8", "surrogateescape"))


JSON = FileHandler("json", _run_json)
