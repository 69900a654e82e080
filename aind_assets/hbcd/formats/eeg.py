"""EEG files (pure; streaming): EDF/EDF+ and BDF/BDF+ header rewriting, and the raw sample files
of BrainVision (``.eeg``) and EEGLAB (``.fdt``) copied as they are.

EDF/BDF
-------
A 256-byte fixed-width ASCII header, then 256 bytes per signal (label 16, transducer 80,
physical dimension 8, physical/digital min/max 4 x 8, prefiltering 80, samples per record 8,
reserved 32), then the data records. De-identifying rewrites only identifier fields, space-padded
to their width; every other byte (sample data included) is copied as it is:

* patient identification (80 bytes at 8): EDF+ ``code sex birthdate name [...]`` becomes
  ``<code through the token rules> <sex> X X`` (birth date and name are never kept); a plain
  EDF's free text becomes ``X``;
* recording identification (80 bytes at 88): EDF+ ``Startdate <date> <admin code> <technician>
  <equipment> [...]`` keeps the date and equipment, the admin code and the rest go through the
  token rules, the technician becomes ``X``; a plain EDF's free text goes through the token
  rules;
* signal labels, transducer types and prefiltering: through the token rules;
* EDF+/BDF+ annotation signals (``EDF Annotations``/``BDF Annotations``): each record's
  annotation bytes through the token rules, NUL-padded to the same length (an annotation text
  that no longer fits is cleared, the time stamps kept);
* start date and time are kept (they are what ``scans.tsv`` ``acq_time`` holds too).

A rewritten field that does not fit its width is cleared to ``X`` (noted). Re-identification
applies the token rules only (it never clears).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass

from aind_assets.hbcd.formats.base import CHUNK, DeidentificationError, FileHandler, FormatContext
from aind_assets.hbcd.formats.text import read_exact_or_less
from aind_assets.hbcd.streams import ReadableBinary, WritableBinary

__all__ = [
    "EdfFormatError",
    "EDF",
    "RAW_SAMPLES",
    "EdfHeader",
    "parse_edf_header",
    "read_edf_header",
    "annotation_spans",
    "is_edf_prefix",
    "looks_like_text",
]

_SIGNAL_FIELDS = (  # (name, width) in the order of the signal header blocks
    ("label", 16),
    ("transducer", 80),
    ("dimension", 8),
    ("physical_min", 8),
    ("physical_max", 8),
    ("digital_min", 8),
    ("digital_max", 8),
    ("prefiltering", 80),
    ("samples", 8),
    ("reserved", 32),
)
_TEXT_SIGNAL_FIELDS = frozenset({"label", "transducer", "prefiltering"})
_ANNOTATION_LABELS = (b"EDF Annotations", b"BDF Annotations")


class EdfFormatError(DeidentificationError):
    pass


@dataclass(frozen=True)
class EdfHeader:
    raw: bytes  # the full header: 256 + 256 * ns bytes
    bdf: bool
    plus: bool  # EDF+ / BDF+
    ns: int
    records: int  # -1: unknown
    samples: tuple[int, ...]
    annotation_signals: tuple[int, ...]

    @property
    def sample_bytes(self) -> int:
        return 3 if self.bdf else 2

    @property
    def record_bytes(self) -> int:
        return sum(self.samples) * self.sample_bytes

    def field(self, name: str, signal: int) -> tuple[int, int]:
        """Offset and width of a signal header field."""
        off = 256
        for fname, width in _SIGNAL_FIELDS:
            if fname == name:
                return off + signal * width, width
            off += self.ns * width
        raise KeyError(name)


def _int(field: bytes, what: str) -> int:
    try:
        return int(field.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise EdfFormatError(f"EDF/BDF header: {what} is not a number") from None


def is_edf_prefix(prefix: bytes) -> bool:
    """Whether a file's first bytes are an EDF or BDF header."""
    if len(prefix) < 256:
        return False
    if prefix[:8] not in (b"0       ", b"\xffBIOSEMI"):
        return False
    try:
        return _int(prefix[184:192], "header size") == 256 * (1 + _int(prefix[252:256], "ns"))
    except EdfFormatError:
        return False


def parse_edf_header(fixed: bytes, signals: bytes) -> EdfHeader:
    if not is_edf_prefix(fixed):
        raise EdfFormatError("not an EDF/BDF file (version or header size)")
    ns = _int(fixed[252:256], "number of signals")
    raw = fixed[:256] + signals
    if len(signals) != 256 * ns:
        raise EdfFormatError("truncated EDF/BDF signal headers")
    bdf = fixed[0] == 0xFF
    reserved = fixed[192:236]
    plus = reserved.startswith((b"EDF+", b"BDF+"))
    h = EdfHeader(raw, bdf, plus, ns, _int(fixed[236:244], "number of records"), (), ())
    samples = []
    notes = []
    for i in range(ns):
        off, width = h.field("samples", i)
        samples.append(_int(raw[off : off + width], "samples per record"))
        off, width = h.field("label", i)
        if raw[off : off + width].strip() in _ANNOTATION_LABELS:
            notes.append(i)
    return EdfHeader(raw, bdf, plus, ns, h.records, tuple(samples), tuple(notes))


def read_edf_header(src: ReadableBinary) -> EdfHeader:
    fixed = read_exact_or_less(src, 256)
    if not is_edf_prefix(fixed):
        raise EdfFormatError("not an EDF/BDF file (version or header size)")
    ns = _int(fixed[252:256], "number of signals")
    signals = read_exact_or_less(src, 256 * ns)
    return parse_edf_header(fixed, signals)


def _fit(text: str, width: int, notes: list[str], what: str) -> bytes:
    data = text.encode("ascii", "replace")
    if len(data) > width:
        notes.append(f"EDF: {what} cleared (rewritten value does not fit)")
        data = b"X"
    return data.ljust(width, b" ")


def _ascii(field: bytes | bytearray) -> str:
    return field.decode("latin-1").rstrip(" \0")


def _patient(value: str, ctx: FormatContext) -> str:
    if not ctx.deidentify:
        return ctx.translator.text(value)
    parts = value.split()
    if len(parts) >= 4:  # EDF+: code sex birthdate name [additional]
        return f"{ctx.translator.text(parts[0])} {parts[1]} X X"
    return "X"


def _recording(value: str, ctx: FormatContext, plus: bool) -> str:
    tr = ctx.translator.text
    parts = value.split()
    if ctx.deidentify and plus and len(parts) >= 5 and parts[0] == "Startdate":
        rest = [tr(p) for p in parts[5:]]
        return " ".join([parts[0], parts[1], tr(parts[2]), "X", tr(parts[3 + 1]), *rest])
    return tr(value)


def rewrite_header(h: EdfHeader, ctx: FormatContext) -> bytes:
    hdr = bytearray(h.raw)
    tr = ctx.translator.text
    hdr[8:88] = _fit(_patient(_ascii(hdr[8:88]), ctx), 80, ctx.notes, "patient identification")
    hdr[88:168] = _fit(
        _recording(_ascii(hdr[88:168]), ctx, h.plus), 80, ctx.notes, "recording identification"
    )
    for name in _TEXT_SIGNAL_FIELDS:
        for i in range(h.ns):
            off, width = h.field(name, i)
            if i in h.annotation_signals and name == "label":
                continue
            value = _ascii(h.raw[off : off + width])
            hdr[off : off + width] = _fit(tr(value), width, ctx.notes, f"signal {name}")
    return bytes(hdr)


def _rewrite_annotations(block: bytes, text: Callable[[str], str], notes: list[str]) -> bytes:
    """One record's annotation bytes through ``text``; same length (NUL-padded)."""
    body = block.rstrip(b"\0")
    new = text(body.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
    if len(new) >= len(block):  # a NUL must still end the last TAL
        # keep the time-keeping parts of each TAL (onset[\x15duration]\x14), clear the texts
        tals = [t.split(b"\x14", 1)[0] + b"\x14\x14" for t in body.split(b"\0") if t]
        new = b"\0".join(tals)
        notes.append("EDF: annotation texts cleared (rewritten value does not fit)")
        if len(new) >= len(block):
            raise EdfFormatError("EDF annotations cannot be rewritten in place")
    return new.ljust(len(block), b"\0")


def annotation_spans(h: EdfHeader) -> list[tuple[int, int]]:
    """``(offset, length)`` of each annotation signal's bytes inside one data record."""
    out = []
    off = 0
    for i, n in enumerate(h.samples):
        size = n * h.sample_bytes
        if i in h.annotation_signals:
            out.append((off, size))
        off += size
    return out


def run_edf(src: ReadableBinary, dst: WritableBinary, ctx: FormatContext) -> None:
    h = read_edf_header(src)
    dst.write(rewrite_header(h, ctx))
    if not h.annotation_signals or h.record_bytes == 0:
        shutil.copyfileobj(src, dst, CHUNK)
        return
    spans = annotation_spans(h)
    while True:
        record = read_exact_or_less(src, h.record_bytes)
        if len(record) < h.record_bytes:
            dst.write(record)  # a trailing partial record is copied as it is
            return
        out = bytearray(record)
        for off, size in spans:
            out[off : off + size] = _rewrite_annotations(
                record[off : off + size], ctx.translator.text, ctx.notes
            )
        dst.write(bytes(out))


EDF = FileHandler("edf", run_edf)


# --- raw sample files (BrainVision .eeg, EEGLAB .fdt) -----------------------------------------

_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def looks_like_text(head: bytes) -> bool:
    """Whether the first bytes look like text rather than binary samples (>= 95 % printable
    ASCII over at least 256 bytes)."""
    if len(head) < 256:
        return False
    return sum(1 for b in head if b in _PRINTABLE) >= 0.95 * len(head)


def run_raw_samples(src: ReadableBinary, dst: WritableBinary, ctx: FormatContext) -> None:
    """Header-less binary samples hold no identifier field: copied byte for byte. A file that
    looks like text is refused (it is not what its name says and could hide anything)."""
    head = read_exact_or_less(src, 4096)
    if ctx.deidentify and looks_like_text(head):
        raise DeidentificationError("raw sample file whose content looks like text")
    dst.write(head)
    shutil.copyfileobj(src, dst, CHUNK)


RAW_SAMPLES = FileHandler("raw-samples", run_raw_samples)
