"""Plain-words reasons for errors raised by libraries while a handler reads a file (pure).

The handlers' own errors (:class:`~aind_assets.hbcd.formats.base.DeidentificationError`,
``NiftiFormatError``, ``GzipFormatError``) already say what is wrong. Errors from the standard
library (``gzip``, ``zlib``, codecs) are translated here into what a user can act on, without
quoting content (their messages may hold bytes of the file, which may hold identifiers).
"""

from __future__ import annotations

import gzip
import zlib

__all__ = ["describe_foreign_error"]


def describe_foreign_error(e: BaseException) -> str:
    """What is wrong with the file, for an exception raised while reading it."""
    if isinstance(e, gzip.BadGzipFile):
        text = str(e)
        if "CRC" in text:
            return "corrupt gzip data: CRC check failed (BadGzipFile)"
        if "length" in text.lower():
            return "corrupt gzip data: the stored length does not match (BadGzipFile)"
        return (
            "not gzip data: the file (or the bytes after its last gzip member) does not start "
            "with the gzip magic bytes 1f 8b (BadGzipFile)"
        )
    if isinstance(e, EOFError):
        return (
            "truncated: the compressed stream ends before its end-of-stream marker; the file "
            "is incomplete (EOFError)"
        )
    if isinstance(e, zlib.error):
        return "corrupt compressed data (zlib.error)"
    if isinstance(e, UnicodeDecodeError):
        return (
            f"not valid {e.encoding} text: undecodable byte at offset {e.start} "
            "(UnicodeDecodeError)"
        )
    if isinstance(e, UnicodeError):
        return f"text encoding error ({type(e).__name__})"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not a file (IsADirectoryError)"
    if isinstance(e, FileNotFoundError):
        return "the file disappeared while it was read (FileNotFoundError)"
    if isinstance(e, PermissionError):
        return "permission denied while reading (PermissionError)"
    return type(e).__name__
