"""HBCD identity map: DCCID / PSCID / site  <->  release-candidate ID / anonymized site.

The map lives on the identified side only. Nothing in this module ever puts an identifier value
into an exception message, ``repr`` or ``str``: errors name the row number and the column.

CSV format (first non-empty line is the header; names are matched case-insensitively, in any
order; extra columns are ignored; surrounding whitespace is stripped)::

    DCCID,PSCID,site,release_candidate_id,anonymized_site
    123456,UMN0012,UMN,NDARINVAB12CD34,site01

Row numbers in errors are physical line numbers of the file (the header is row 1), as a
spreadsheet shows them.

Every value must be ASCII letters and digits only (BIDS labels; this also makes "identifier
positions" well defined: see :mod:`aind_assets.hbcd.identity.replace`). Values are compared
case-insensitively. A DCCID, PSCID or release-candidate ID may appear once; a site must always map
to the same anonymized site and vice versa; no value of one kind may equal a value of another
kind (e.g. a release-candidate ID equal to some PSCID).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "COLUMNS",
    "IdentityMap",
    "IdentityRow",
    "Identifiers",
    "format_identity_map",
    "parse_identity_map",
]

#: CSV column names, in the documented order.
COLUMNS: tuple[str, ...] = (
    "DCCID",
    "PSCID",
    "site",
    "release_candidate_id",
    "anonymized_site",
)

_FIELD_FOR_COLUMN = {
    "DCCID": "dccid",
    "PSCID": "pscid",
    "site": "site",
    "release_candidate_id": "rc_id",
    "anonymized_site": "anon_site",
}

_LABEL = re.compile(r"[A-Za-z0-9]+\Z")


@dataclass(frozen=True, slots=True, repr=False)
class IdentityRow:
    """One subject. ``dccid``, ``pscid`` and ``site`` are identifiers; ``rc_id`` and
    ``anon_site`` are their de-identified replacements."""

    dccid: str
    pscid: str
    site: str
    rc_id: str
    anon_site: str

    def __repr__(self) -> str:  # never reveal identifiers
        return (
            f"IdentityRow(rc_id={self.rc_id!r}, anon_site={self.anon_site!r}, <identifiers hidden>)"
        )

    __str__ = __repr__


class Identifiers(Mapping[str, str]):
    """Identifier value (case-folded) -> kind (``"DCCID"``, ``"PSCID"`` or ``"site"``).

    Used by the leak scanner. Its ``repr`` does not show values.
    """

    __slots__ = ("_kinds", "max_len")

    def __init__(self, kinds: Mapping[str, str]):
        self._kinds = {k.casefold(): v for k, v in kinds.items()}
        self.max_len = max((len(k) for k in self._kinds), default=0)

    def __getitem__(self, key: str) -> str:
        return self._kinds[key.casefold()]

    def get(self, key, default=None):  # fast path, avoids KeyError
        return self._kinds.get(key.casefold(), default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.casefold() in self._kinds

    def __repr__(self) -> str:
        return f"Identifiers(<{len(self._kinds)} values hidden>)"

    __str__ = __repr__


class IdentityMap:
    """Parsed identity map with case-insensitive lookups. Build with :func:`parse_identity_map`."""

    __slots__ = (
        "source_name",
        "rows",
        "_by_dccid",
        "_by_pscid",
        "_by_rc",
        "_site",
        "_anon",
        "__weakref__",
    )

    def __init__(self, rows: tuple[IdentityRow, ...], source_name: str = "<identity map>"):
        self.source_name = source_name
        self.rows = tuple(rows)
        self._by_dccid = {r.dccid.casefold(): r for r in self.rows}
        self._by_pscid = {r.pscid.casefold(): r for r in self.rows}
        self._by_rc = {r.rc_id.casefold(): r for r in self.rows}
        self._site = {r.site.casefold(): r.anon_site for r in self.rows}
        self._anon = {r.anon_site.casefold(): r.site for r in self.rows}

    def __repr__(self) -> str:
        return f"IdentityMap(source={self.source_name!r}, rows={len(self.rows)})"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[IdentityRow]:
        return iter(self.rows)

    # --- lookups (None when absent; the *_or_raise variants never echo the key) ---------
    def by_dccid(self, dccid: str) -> IdentityRow | None:
        return self._by_dccid.get(dccid.casefold())

    def by_pscid(self, pscid: str) -> IdentityRow | None:
        return self._by_pscid.get(pscid.casefold())

    def by_rc(self, rc_id: str) -> IdentityRow | None:
        return self._by_rc.get(rc_id.casefold())

    def require_dccid(self, dccid: str) -> IdentityRow:
        row = self.by_dccid(dccid)
        if row is None:
            raise KeyError("DCCID not found in identity map")
        return row

    def require_rc(self, rc_id: str) -> IdentityRow:
        row = self.by_rc(rc_id)
        if row is None:
            raise KeyError("release candidate ID not found in identity map")
        return row

    def anonymized_site(self, site: str) -> str | None:
        return self._site.get(site.casefold())

    def site_for_anonymized(self, anon_site: str) -> str | None:
        return self._anon.get(anon_site.casefold())

    def has_rc(self, rc_id: str) -> bool:
        return rc_id.casefold() in self._by_rc

    def rc_ids(self) -> frozenset[str]:
        return frozenset(r.rc_id for r in self.rows)

    def identifiers(self) -> Identifiers:
        """All DCCIDs, PSCIDs and site IDs with their kind (for leak scanning)."""
        kinds: dict[str, str] = {}
        for r in self.rows:
            kinds[r.site] = "site"
        for r in self.rows:
            kinds[r.pscid] = "PSCID"
            kinds[r.dccid] = "DCCID"
        return Identifiers(kinds)


def parse_identity_map(text: str, source_name: str = "<identity map>") -> IdentityMap:
    """Parse the identity-map CSV (see module docstring). Raises ``ValueError`` naming the
    source, row and column, never the value."""

    def fail(msg: str) -> ValueError:
        return ValueError(f"{source_name}: {msg}")

    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    col_index: dict[str, int] = {}
    rows: list[IdentityRow] = []
    first_seen: dict[tuple[str, str], int] = {}  # (column, folded value) -> row
    site_anon: dict[str, tuple[str, int]] = {}
    anon_site: dict[str, tuple[str, int]] = {}
    any_value: dict[str, tuple[str, int]] = {}  # folded value -> (column, row)
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                folded = [h.casefold() for h in header]
                missing = [c for c in COLUMNS if c.casefold() not in folded]
                if missing:
                    raise fail(f"row {line}: header is missing column(s) {', '.join(missing)}")
                for c in COLUMNS:
                    if folded.count(c.casefold()) > 1:
                        raise fail(f"row {line}: header has column {c} more than once")
                    col_index[c] = folded.index(c.casefold())
                continue
            values: dict[str, str] = {}
            for col in COLUMNS:
                i = col_index[col]
                value = cells[i].strip() if i < len(cells) else ""
                if not value:
                    raise fail(f"row {line}: missing {col}")
                if not _LABEL.match(value):
                    raise fail(f"row {line}: {col} must contain only ASCII letters and digits")
                values[col] = value
            for col in ("DCCID", "PSCID", "release_candidate_id"):
                key = (col, values[col].casefold())
                if key in first_seen:
                    raise fail(f"row {line}: duplicate {col} (same as row {first_seen[key]})")
                first_seen[key] = line
            site_f, anon_f = values["site"].casefold(), values["anonymized_site"].casefold()
            if site_f in site_anon and site_anon[site_f][0] != anon_f:
                raise fail(
                    f"row {line}: site maps to a different anonymized_site than in row "
                    f"{site_anon[site_f][1]}"
                )
            if anon_f in anon_site and anon_site[anon_f][0] != site_f:
                raise fail(
                    f"row {line}: anonymized_site is already used for another site (row "
                    f"{anon_site[anon_f][1]})"
                )
            site_anon.setdefault(site_f, (anon_f, line))
            anon_site.setdefault(anon_f, (site_f, line))
            for col in COLUMNS:
                f = values[col].casefold()
                seen = any_value.get(f)
                if seen is not None and seen[0] != col:
                    raise fail(f"row {line}: {col} equals a {seen[0]} (row {seen[1]})")
                any_value.setdefault(f, (col, line))
            rows.append(IdentityRow(**{_FIELD_FOR_COLUMN[c]: values[c] for c in COLUMNS}))
    except csv.Error:
        raise fail(f"row {reader.line_num}: malformed CSV") from None
    if header is None:
        raise fail("empty identity map (no header)")
    if not rows:
        raise fail("identity map has no rows")
    return IdentityMap(tuple(rows), source_name)


def format_identity_map(rows: list[IdentityRow] | tuple[IdentityRow, ...]) -> str:
    """CSV text for rows, in the documented column order (used by the demo data writer)."""
    out = io.StringIO(newline="")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([r.dccid, r.pscid, r.site, r.rc_id, r.anon_site])
    return out.getvalue()
