"""Decoding small text inputs users hand in (CSV of asset ids, identity maps) (pure).

Spreadsheet programs save "CSV" as UTF-8 with or without a byte-order mark, and Excel's
"Unicode text" is UTF-16 with a BOM: those are decoded. Anything else that is not UTF-8 fails
with a message naming the file and the offset of the first undecodable byte.
"""

from __future__ import annotations

import codecs

__all__ = ["BOMS", "TextInputError", "decode_text"]

#: Byte-order marks and their codecs, longest first (UTF-32 LE begins like UTF-16 LE).
BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


class TextInputError(ValueError):
    """A text input cannot be decoded; the message names it and the offending offset."""


def decode_text(data: bytes, source: str) -> str:
    """``data`` as text: UTF-8/16/32 with a byte-order mark, else strict UTF-8.

    A NUL byte in what is taken for UTF-8 means UTF-16 without a BOM (or a binary file):
    rejected, since a NUL is never part of a CSV."""
    for bom, codec in BOMS:
        if data.startswith(bom):
            body, encoding = data[len(bom) :], codec
            break
    else:
        body, encoding = data, "utf-8"
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as e:
        raise TextInputError(
            f"{source}: not {encoding.upper()} text: undecodable byte 0x{body[e.start]:02x} at "
            f"offset {e.start + (len(data) - len(body))}; save it as UTF-8 (CSV UTF-8)"
        ) from None
    if "\x00" in text:
        at = text.index("\x00")
        raise TextInputError(
            f"{source}: NUL character at character {at}: UTF-16 without a byte-order mark, or "
            "not a text file; save it as UTF-8 (CSV UTF-8)"
        )
    return text
