"""Leak scanner: find identifiers (DCCID, PSCID, site ID) in a file's name and content (pure).

Semantics are those of :mod:`aind_assets.hbcd.identity.replace`: an identifier is found where it stands as a
whole token (maximal run of ASCII letters/digits, case-insensitive). ``91234567`` does not
contain the DCCID ``123456``; ``sub-123456_ses``, ``"123456"``, ``id=123456.`` do. So whatever the
scanner flags is something the replacement rules would have replaced, and a numeric TSV cell
that *equals* an identifier is flagged (it is indistinguishable from one).

What is scanned (content is sniffed, not trusted from the name):

* the relative path (``location="path"``);
* gzip: every member header's FNAME / FCOMMENT / FEXTRA (``gzip[i].FNAME``...), then the
  decompressed content, recursively;
* EEG (sniffed): EDF/BDF header fields and annotation signals; EEGLAB ``.set`` / any MATLAB v5
  file: header text, names and every char array, at any depth (``mat:EEG.event.type``...);
  raw sample files (``.eeg``, ``.fdt``): name only (:mod:`aind_assets.hbcd.leaks.eeg`);
* NIfTI-1/2 (sniffed): every header string field (``nifti.descrip``...) and every extension
  (``nifti.extension[i](comment)``...). Voxel data is *not* scanned (binary numbers would give
  false matches for short site codes). It is still read (later gzip members' headers are
  scanned), unless the caller vouches that everything after the NIfTI prefix is the source's
  voxel data in minimal members (``voxels_unchanged``: de-identification recorded it so); then
  the scan stops after the extensions;
* anything else as text in three views: bytes as ASCII/latin-1/UTF-8 (``ascii``), UTF-16-LE and
  UTF-16-BE; JSON files (``.json``/``.json.gz``, < 64 MiB) also after parsing, so ``\\u``-escaped
  identifiers are found (``json:/Key/0``...).

Not detected: identifiers split by markup, percent-/HTML-entity-/base64-encoded identifiers, and
content of formats that are not in the allow-list anyway (zip, pdf, DICOM).

A :class:`Finding` never contains an identifier value: its ``path`` has identifier tokens
replaced by ``<DCCID>``/``<PSCID>``/``<site>``. A file that cannot be parsed yields a finding of
kind ``"unscannable"`` (the leak check must treat it as blocking).
"""

from __future__ import annotations

import codecs
import io
import json
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aind_assets.hbcd.formats.eeg import EdfFormatError
from aind_assets.hbcd.formats.eeglab import EeglabFormatError
from aind_assets.hbcd.formats.gz import (
    GZIP_MAGIC,
    GzipContentStream,
    GzipFormatError,
    GzipMemberHeader,
)
from aind_assets.hbcd.formats.nifti import (
    NiftiFormatError,
    parse_header,
    read_nifti_prefix,
    string_fields,
)
from aind_assets.hbcd.formats.text import PrefixedReader, detect_encoding, read_exact_or_less
from aind_assets.hbcd.identity.idmap import Identifiers, IdentityMap
from aind_assets.hbcd.leaks.eeg import RAW_SAMPLE_EXTENSIONS, is_edf, is_mat5, scan_edf, scan_mat5
from aind_assets.hbcd.streams import ReadableBinary

__all__ = ["Finding", "redact", "scan_for_identifiers", "scan_tree"]

CHUNK = 1 << 20
_MAX_JSON = 64 << 20
_MAX_DEPTH = 3
_TOKEN = re.compile(r"[A-Za-z0-9]+")
_LEAD = re.compile(r"[A-Za-z0-9]*")
_SPLIT = re.compile(r"([A-Za-z0-9]+)")


@dataclass(frozen=True)
class Finding:
    path: str  # relative path with identifiers redacted
    location: str  # "path", "content", "gzip[0].FNAME", "nifti.descrip", "json:/A/0", ...
    offset: int | None  # byte offset in the (decompressed) content/field; char index in paths
    encoding: str | None  # "ascii" (also latin-1/UTF-8), "utf-16-le", "utf-16-be"
    kind: str  # "DCCID", "PSCID", "site" or "unscannable"

    def __str__(self) -> str:
        where = self.location + (f"@{self.offset}" if self.offset is not None else "")
        enc = f" ({self.encoding})" if self.encoding and self.encoding != "ascii" else ""
        return f"{self.path}: {self.kind} in {where}{enc}"


def _as_identifiers(identifiers: Identifiers | IdentityMap | Mapping[str, str]) -> Identifiers:
    if isinstance(identifiers, Identifiers):
        return identifiers
    if isinstance(identifiers, IdentityMap):
        return identifiers.identifiers()
    return Identifiers(identifiers)


def redact(text: str, identifiers: Identifiers | IdentityMap | Mapping[str, str]) -> str:
    """``text`` with every identifier token replaced by ``<KIND>``."""
    ids = _as_identifiers(identifiers)
    parts = _SPLIT.split(text)
    for i in range(1, len(parts), 2):
        kind = ids.get(parts[i])
        if kind is not None:
            parts[i] = f"<{kind}>"
    return "".join(parts)


class _Matcher:
    """Streaming whole-token matcher over text chunks."""

    def __init__(self, ids: Identifiers, emit: Callable[[str, int], None]):
        self.ids = ids
        self.maxlen = ids.max_len
        self.emit = emit
        self.pos = 0
        self.carry = ""
        self.skipping = False

    def feed(self, text: str, final: bool = False) -> None:
        start = self.pos
        self.pos += len(text)
        if self.skipping:
            lead = _LEAD.match(text)  # the pattern matches the empty string: never None
            n = lead.end() if lead is not None else 0
            if n == len(text) and not final:
                return
            text = text[n:]
            start += n
            self.skipping = False
        buf = self.carry + text
        base = start - len(self.carry)
        self.carry = ""
        get = self.ids.get
        end = len(buf)
        for m in _TOKEN.finditer(buf):
            s, e = m.span()
            if e == end and not final:
                if e - s > self.maxlen:
                    self.skipping = True
                else:
                    self.carry = buf[s:]
                break
            if e - s <= self.maxlen:
                kind = get(m.group())
                if kind is not None:
                    self.emit(kind, base + s)


class _Scan:
    def __init__(
        self, relpath: str, ids: Identifiers, max_findings: int, voxels_unchanged: bool = False
    ):
        self.ids = ids
        self.relpath = relpath
        self.voxels_unchanged = voxels_unchanged
        self.path = redact(relpath, ids)
        self.findings: list[Finding] = []
        self.max = max_findings

    def add(self, location: str, offset: int | None, encoding: str | None, kind: str) -> None:
        if len(self.findings) < self.max:
            self.findings.append(Finding(self.path, location, offset, encoding, kind))

    # -- text views ---------------------------------------------------------------------
    def text_chunks(self, chunks: Iterable[bytes], location: str) -> None:
        ids = self.ids
        views: list[tuple[Any, _Matcher]] = []
        ascii_m = _Matcher(ids, lambda k, o: self.add(location, o, "ascii", k))
        for enc in ("utf-16-le", "utf-16-be"):
            dec = codecs.getincrementaldecoder(enc)("replace")
            m = _Matcher(ids, self._utf16_emitter(location, enc))
            views.append((dec, m))
        for chunk in chunks:
            ascii_m.feed(chunk.decode("latin-1"))
            for dec, m in views:
                m.feed(dec.decode(chunk))
        ascii_m.feed("", final=True)
        for dec, m in views:
            m.feed(dec.decode(b"", final=True), final=True)

    def _utf16_emitter(self, location: str, enc: str) -> Callable[[str, int], None]:
        """Reports a match of a UTF-16 view (offsets in code units: bytes are twice that)."""
        return lambda kind, offset: self.add(location, 2 * offset, enc, kind)

    def text_bytes(self, data: bytes, location: str) -> None:
        self.text_chunks([data], location)

    def json_view(self, data: bytes) -> None:
        try:
            obj = json.loads(detect_encoding(data[:64]).decode(data))
        except (ValueError, UnicodeError):
            return  # not JSON: the text views already covered it

        def walk(o: Any, pointer: str) -> None:
            if isinstance(o, dict):
                for k, v in o.items():
                    key = str(k)
                    self._string(key, f"json:{pointer}/(key)")
                    walk(v, f"{pointer}/{redact(key, self.ids)}")
            elif isinstance(o, list):
                for i, v in enumerate(o):
                    walk(v, f"{pointer}/{i}")
            elif isinstance(o, str):
                self._string(o, f"json:{pointer}")

        walk(obj, "")

    def _string(self, s: str, location: str) -> None:
        m = _Matcher(self.ids, lambda k, o: self.add(location, o, "json", k))
        m.feed(s, final=True)

    # -- containers ---------------------------------------------------------------------
    def gzip_header(self, h: GzipMemberHeader) -> None:
        for name, value in (("FNAME", h.fname), ("FCOMMENT", h.fcomment), ("FEXTRA", h.fextra)):
            if value:
                self.text_bytes(value, f"gzip[{h.index}].{name}")

    def stream(self, stream: ReadableBinary, location: str, is_json: bool, depth: int = 0) -> None:
        prefix = read_exact_or_less(stream, 540)
        rest = PrefixedReader(prefix, stream)
        if prefix[:2] == GZIP_MAGIC and depth < _MAX_DEPTH:
            inner = GzipContentStream(rest, on_header=self.gzip_header, chunk=CHUNK)
            self.stream(inner, location, is_json, depth + 1)
            return
        if _is_nifti(prefix):
            self.nifti(rest, location)
            if not self.voxels_unchanged:
                _drain(rest)
            return
        if self.format_hook(prefix, rest):
            return
        if not is_json:
            self.text_chunks(_chunks(rest), location)
            return
        kept: list[bytes] = []
        size = 0

        def tee() -> Iterable[bytes]:
            nonlocal size
            for chunk in _chunks(rest):
                if size <= _MAX_JSON:
                    kept.append(chunk)
                    size += len(chunk)
                yield chunk

        self.text_chunks(tee(), location)
        if size <= _MAX_JSON:
            self.json_view(b"".join(kept))

    def format_hook(self, prefix: bytes, rest: ReadableBinary) -> bool:
        """Formats read by :mod:`aind_assets.hbcd.leaks.eeg`: EDF/BDF (header and
        annotations); MATLAB v5 / EEGLAB ``.set`` (strings and names); raw sample files (by
        name: only their path is scanned)."""
        if is_edf(prefix):
            scan_edf(rest, self.text_bytes)
            return True
        if is_mat5(prefix):
            scan_mat5(rest, lambda data, where: self.text_bytes(data, redact(where, self.ids)))
            return True
        if self.relpath.lower().endswith(RAW_SAMPLE_EXTENSIONS):
            _drain(rest)
            return True
        return False

    def nifti(self, stream: ReadableBinary, location: str) -> None:
        info, raw, exts = read_nifti_prefix(stream)
        base = "nifti"
        for name, off, length in string_fields(info.version):
            if name == "regular":
                continue
            self.text_bytes(raw[off : off + length], f"{base}.{name}")
        for ext in exts:
            self.text_bytes(ext.content, f"{base}.extension[{ext.index}]({ext.label})")
            if ext.ecode == 44:  # NIfTI-MRS JSON header extension: \u escapes too
                self.json_view(ext.content.rstrip(b"\0"))


def _is_nifti(prefix: bytes) -> bool:
    try:
        parse_header(prefix)
    except NiftiFormatError:
        return False
    return True


def _chunks(stream: ReadableBinary) -> Iterable[bytes]:
    while True:
        data = stream.read(CHUNK)
        if not data:
            return
        yield data


def _drain(stream: ReadableBinary) -> None:
    for _ in _chunks(stream):
        pass


def scan_for_identifiers(
    relpath: str,
    data_or_stream: bytes | bytearray | memoryview | ReadableBinary,
    identifiers: Identifiers | IdentityMap | Mapping[str, str],
    *,
    max_findings: int = 1000,
    voxels_unchanged: bool = False,
) -> list[Finding]:
    """Scan a file's relative path and content (bytes or a binary stream) for identifiers.
    Returns findings (empty list = clean); at most ``max_findings`` are kept.
    ``voxels_unchanged``: a NIfTI's content is read only up to its voxel data (see above)."""
    ids = _as_identifiers(identifiers)
    scan = _Scan(relpath, ids, max_findings, voxels_unchanged)
    if len(ids) == 0:
        return []
    _Matcher(ids, lambda k, o: scan.add("path", o, "ascii", k)).feed(relpath, final=True)
    if isinstance(data_or_stream, bytes | bytearray | memoryview):
        stream: ReadableBinary = io.BytesIO(bytes(data_or_stream))
    else:
        stream = data_or_stream
    name = relpath.rsplit("/", 1)[-1].lower()
    is_json = name.endswith(".json") or name.endswith(".json.gz")
    try:
        scan.stream(stream, "content", is_json)
    except (GzipFormatError, NiftiFormatError, EdfFormatError, EeglabFormatError) as e:
        scan.add(f"unreadable ({e})", None, None, "unscannable")
    except (EOFError, OSError, zlib.error) as e:
        scan.add(f"unreadable ({type(e).__name__})", None, None, "unscannable")
    return scan.findings


def scan_tree(root, identifiers: Identifiers | IdentityMap | Mapping[str, str]) -> list[Finding]:
    """Scan every file under a local directory (a ``pathlib.Path``)."""
    ids = _as_identifiers(identifiers)
    out: list[Finding] = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                out.extend(scan_for_identifiers(p.relative_to(root).as_posix(), f, ids))
    return out
