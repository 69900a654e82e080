"""What the leak scanner reads inside EEG files (pure): the EDF/BDF header (every field) and the
annotation signals of every data record, never the samples (binary numbers would give false
matches for short site codes). Used by :mod:`aind_assets.hbcd.leaks.scan` through one hook.
"""

from __future__ import annotations

from collections.abc import Callable

from aind_assets.hbcd.formats.eeg import annotation_spans, is_edf_prefix, read_edf_header
from aind_assets.hbcd.formats.text import read_exact_or_less
from aind_assets.hbcd.streams import ReadableBinary

__all__ = ["RAW_SAMPLE_EXTENSIONS", "is_edf", "scan_edf"]

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
