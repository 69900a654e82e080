"""What the leak scanner reads inside EEG files (pure): the EDF/BDF header (every field) and the
annotation signals of every data record; every string of an EEGLAB ``.set`` (MATLAB v5: header
text, variable and field names, char arrays at any depth); never the samples (binary numbers
would give false matches for short site codes). Used by :mod:`aind_assets.hbcd.leaks.scan`
through one hook.
"""

from __future__ import annotations

from collections.abc import Callable

from aind_assets.hbcd.formats.eeg import annotation_spans, is_edf_prefix, read_edf_header
from aind_assets.hbcd.formats.eeglab import (
    MAX_SET_BYTES,
    EeglabFormatError,
    is_mat5_prefix,
    mat_header_text,
    read_mat5,
    rewrite_mat,
)
from aind_assets.hbcd.formats.text import read_exact_or_less
from aind_assets.hbcd.streams import ReadableBinary

__all__ = ["RAW_SAMPLE_EXTENSIONS", "is_edf", "is_mat5", "scan_edf", "scan_mat5"]

#: Header-less binary sample files (BrainVision ``.eeg``, EEGLAB ``.fdt``): their content is
#: not scanned as text (de-identification refuses one that looks like text).
RAW_SAMPLE_EXTENSIONS = (".eeg", ".fdt")


def is_edf(prefix: bytes) -> bool:
    return is_edf_prefix(prefix)


def scan_edf(stream: ReadableBinary, emit: Callable[[bytes, str], None]) -> None:
    """Call ``emit(bytes, location)`` for the header (``edf.header``) and each record's
    annotation bytes (``edf.annotations[record]``); reads ``stream`` to its end."""
    h = read_edf_header(stream)
    emit(h.raw, "edf.header")
    spans = annotation_spans(h)
    n = 0
    while True:
        size = h.record_bytes or (1 << 20)
        record = read_exact_or_less(stream, size)
        if not record:
            return
        if h.record_bytes and len(record) == h.record_bytes:
            for off, length in spans:
                emit(record[off : off + length], f"edf.annotations[{n}]")
        n += 1


def is_mat5(prefix: bytes) -> bool:
    return is_mat5_prefix(prefix)


def scan_mat5(stream: ReadableBinary, emit: Callable[[bytes, str], None]) -> None:
    """Call ``emit(utf-8 bytes, location)`` for the header text (``mat.header``) and every name
    and string of a MATLAB v5 file (``mat:<variable>.<field>``...: locations hold names, the
    caller redacts them); numeric arrays are not read as text. Reads ``stream`` to its end."""
    data = read_exact_or_less(stream, MAX_SET_BYTES + 1)
    if len(data) > MAX_SET_BYTES:
        raise EeglabFormatError("MATLAB file too large to scan")
    emit(mat_header_text(data).encode("latin-1"), "mat.header")

    def text(value: str, where: str) -> str:
        emit(value.encode("utf-8", "surrogateescape"), "mat:" + where)
        return value

    rewrite_mat(read_mat5(data), text)
