"""Identifier replacement in identifier positions only (pure; no Dagster).

Identifier positions
--------------------
Text is split into *tokens*: maximal runs of ASCII letters and digits. Everything else
(``-``, ``_``, ``/``, ``.``, spaces, punctuation, non-ASCII characters) separates tokens. An
identifier is replaced only where it is a whole token (case-insensitive). So in
``sub-123456_ses-V02_T1w.nii.gz`` or ``"participant 123456."`` the DCCID ``123456`` is replaced,
but a numeric code that merely *contains* it (``91234567``) or an alphanumeric run such as
``X123456`` is left unchanged. The leak scanner (:mod:`aind_assets.hbcd.leaks.scan`) uses exactly
the same definition, so what it would flag is what this module replaces.

Consequence worth knowing: ``123456.5`` or a time ``10:12:34.123456`` *does* contain the token
``123456``; in free text it is replaced (privacy first). TSV handling in
:mod:`aind_assets.hbcd.formats.dispatch` only touches ID columns, so numeric TSV cells are never changed.

Replacement order (DESIGN §4) is realised in one left-to-right pass: at each token the longest
rule wins: ``{PSCID}_{DCCID}`` (same subject) -> RC, otherwise ``sub-{DCCID}`` -> ``sub-{RC}``
(the DCCID token), PSCID -> RC, DCCID -> RC, site -> anonymized site. Because it is one pass,
a replacement is never replaced again.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Iterator

from aind_assets.hbcd.identity.idmap import IdentityMap

__all__ = [
    "Translator",
    "UnmappedIdentifierError",
    "check_subject_labels",
    "deidentifier",
    "deidentify_path",
    "deidentify_text",
    "identified_session_prefix",
    "partition_key_for_identified",
    "parse_session_partition_key",
    "reidentifier",
    "reidentify_path",
    "reidentify_text",
    "session_partition_key",
    "subject_labels",
]

_SPLIT = re.compile(r"([A-Za-z0-9]+)")
_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_SUB_LABEL = re.compile(r"(?<![A-Za-z0-9])sub-([A-Za-z0-9]+)(?![A-Za-z0-9])")
_LABEL = re.compile(r"[A-Za-z0-9]+\Z")
_PARTITION_KEY = re.compile(r"sub-([A-Za-z0-9]+)_ses-([A-Za-z0-9]+)\Z")


class UnmappedIdentifierError(ValueError):
    """A subject label that the identity map does not know (its value is never included)."""


class Translator:
    """Token-wise replacement (see module docstring). Build with :func:`deidentifier` /
    :func:`reidentifier`; instances are cached per identity map."""

    __slots__ = ("_tokens", "_pairs", "direction")

    def __init__(self, tokens: dict[str, str], pairs: dict[tuple[str, str], str], direction: str):
        self._tokens = {k.casefold(): v for k, v in tokens.items()}
        self._pairs = {(a.casefold(), b.casefold()): v for (a, b), v in pairs.items()}
        self.direction = direction

    def __repr__(self) -> str:
        return f"Translator({self.direction}, <{len(self._tokens)} tokens hidden>)"

    def text(self, text: str) -> str:
        """Replace identifiers standing as whole tokens in ``text``."""
        if not text:
            return text
        parts = _SPLIT.split(text)  # [sep, tok, sep, tok, ..., sep]
        n = len(parts)
        if n == 1:
            return text
        tokens, pairs = self._tokens, self._pairs
        out = [parts[0]]
        i = 1
        while i < n:
            tok = parts[i]
            if pairs and parts[i + 1] == "_" and i + 2 < n:
                rep = pairs.get((tok.casefold(), parts[i + 2].casefold()))
                if rep is not None:
                    out.append(rep)
                    out.append(parts[i + 3])
                    i += 4
                    continue
            rep = tokens.get(tok.casefold())
            out.append(tok if rep is None else rep)
            out.append(parts[i + 1])
            i += 2
        return "".join(out)

    path = text  # file and folder names: same token rules

    def iter_text(self, chunks: Iterable[str]) -> Iterator[str]:
        """Streaming :meth:`text`: holds back a trailing run of ``[A-Za-z0-9_]`` so no token
        (or ``PSCID_DCCID`` pair) is split across chunks. Memory is bounded by the chunk size
        plus the longest such run."""
        carry = ""
        for chunk in chunks:
            if not chunk:
                continue
            buf = carry + chunk
            i = len(buf)
            while i > 0 and buf[i - 1] in _WORD_CHARS:
                i -= 1
            if i:
                yield self.text(buf[:i])
            carry = buf[i:]
        if carry:
            yield self.text(carry)


_CACHE: weakref.WeakKeyDictionary[IdentityMap, tuple[Translator, Translator]] = (
    weakref.WeakKeyDictionary()
)


def _translators(idmap: IdentityMap) -> tuple[Translator, Translator]:
    cached = _CACHE.get(idmap)
    if cached is None:
        fwd: dict[str, str] = {}
        pairs: dict[tuple[str, str], str] = {}
        back: dict[str, str] = {}
        for r in idmap.rows:
            fwd[r.site] = r.anon_site
            back[r.anon_site] = r.site
        for r in idmap.rows:
            fwd[r.dccid] = r.rc_id
            fwd[r.pscid] = r.rc_id
            pairs[(r.pscid, r.dccid)] = r.rc_id
            back[r.rc_id] = r.dccid
        cached = (Translator(fwd, pairs, "deidentify"), Translator(back, {}, "reidentify"))
        _CACHE[idmap] = cached
    return cached


def deidentifier(idmap: IdentityMap) -> Translator:
    """DCCID/PSCID -> RC, site -> anonymized site."""
    return _translators(idmap)[0]


def reidentifier(idmap: IdentityMap) -> Translator:
    """RC -> DCCID, anonymized site -> site (the derivatives flow back to the identified side)."""
    return _translators(idmap)[1]


def deidentify_text(text: str, idmap: IdentityMap) -> str:
    return deidentifier(idmap).text(text)


def reidentify_text(text: str, idmap: IdentityMap) -> str:
    return reidentifier(idmap).text(text)


def subject_labels(path: str) -> list[str]:
    """Labels of every ``sub-<label>`` entity in a path or string."""
    return _SUB_LABEL.findall(path)


def check_subject_labels(path: str, idmap: IdentityMap) -> None:
    """Raise :class:`UnmappedIdentifierError` if a ``sub-<label>`` in the (already
    de-identified) path is not a release-candidate ID of the map."""
    for label in subject_labels(path):
        if not idmap.has_rc(label):
            raise UnmappedIdentifierError(
                "path contains a subject label that is not a release-candidate ID of the "
                "identity map (subject missing from the map?)"
            )


def deidentify_path(relpath: str, idmap: IdentityMap, *, strict: bool = True) -> str:
    """De-identify file and folder names. With ``strict`` (default), a ``sub-<label>`` that is
    not mapped to a release-candidate ID raises :class:`UnmappedIdentifierError`: a subject
    missing from the map must not be copied under its DCCID."""
    out = deidentifier(idmap).text(relpath)
    if strict:
        check_subject_labels(out, idmap)
    return out


def reidentify_path(relpath: str, idmap: IdentityMap) -> str:
    return reidentifier(idmap).text(relpath)


def _label(value: str, prefix: str, what: str) -> str:
    if value.startswith(prefix):
        value = value[len(prefix) :]
    if not _LABEL.match(value):
        raise ValueError(f"{what} must be ASCII letters and digits")
    return value


def session_partition_key(rc_id: str, session_label: str) -> str:
    """``sub-<RC>_ses-<label>``; accepts ``V02`` or ``ses-V02`` and ``RC`` or ``sub-RC``."""
    rc = _label(rc_id, "sub-", "release candidate ID")
    ses = _label(session_label, "ses-", "session label")
    return f"sub-{rc}_ses-{ses}"


def parse_session_partition_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`session_partition_key`: ``(rc_id, session_label)`` without prefixes."""
    m = _PARTITION_KEY.match(key)
    if not m:
        raise ValueError("not a session partition key of the form sub-<RC>_ses-<label>")
    return m.group(1), m.group(2)


def partition_key_for_identified(dccid: str, session_label: str, idmap: IdentityMap) -> str:
    """Partition key for an identified session folder ``sub-<DCCID>/ses-<label>``
    (``KeyError`` without the value if the DCCID is not mapped)."""
    row = idmap.require_dccid(_label(dccid, "sub-", "DCCID"))
    return session_partition_key(row.rc_id, session_label)


def identified_session_prefix(partition_key: str, idmap: IdentityMap) -> str:
    """``sub-<DCCID>/ses-<label>/`` on the identified side for a partition key (resolve this
    inside the run, never store it in Dagster metadata)."""
    rc, ses = parse_session_partition_key(partition_key)
    return f"sub-{idmap.require_rc(rc).dccid}/ses-{ses}/"
