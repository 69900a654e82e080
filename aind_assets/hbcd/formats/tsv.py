"""BIDS TSV as strings (pure). Every cell stays a string, so ``3`` never becomes ``3.0`` and
``n/a`` / ``_NaN_`` are kept verbatim. BIDS TSV has no quoting: cells are split on tabs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Tsv", "merge_tsv_rows", "parse_tsv", "select_tsv_rows"]


@dataclass
class Tsv:
    columns: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)

    def column(self, name: str) -> list[str]:
        return [r.get(name, "n/a") for r in self.rows]

    def to_text(self, missing: str = "n/a") -> str:
        lines = ["\t".join(self.columns)]
        for r in self.rows:
            lines.append("\t".join(r.get(c, missing) for c in self.columns))
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:  # rows may hold identifiers on the identified side
        return f"Tsv(columns={self.columns!r}, rows={len(self.rows)})"


def parse_tsv(text: str) -> Tsv:
    """Parse TSV text (``\\n`` or ``\\r\\n``; a BOM is dropped; blank lines skipped). Short
    rows are padded with ``n/a``; extra cells raise ``ValueError`` (line number only)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return Tsv([])
    columns = lines[0].split("\t")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) > len(columns):
            raise ValueError(f"TSV line {n}: more cells than columns")
        cells += ["n/a"] * (len(columns) - len(cells))
        rows.append(dict(zip(columns, cells, strict=True)))
    return Tsv(columns, rows)


def select_tsv_rows(text: str, keep: Callable[[Mapping[str, str]], bool]) -> str:
    """TSV text with only the rows for which ``keep(row)`` is true (header always kept)."""
    t = parse_tsv(text)
    t.rows = [r for r in t.rows if keep(r)]
    return t.to_text()


def merge_tsv_rows(existing: str | None, new: str, key: str) -> str:
    """Upsert rows of ``new`` into ``existing`` by the ``key`` column (e.g. the de-identified
    ``participants.tsv`` updated with one subject's row). Columns are the union, existing order
    first; missing cells become ``n/a``; existing row order is kept and new keys appended."""
    n = parse_tsv(new)
    if existing is None or not existing.strip():
        return n.to_text()
    e = parse_tsv(existing)
    if key not in e.columns or key not in n.columns:
        raise ValueError(f"both TSVs need the key column {key!r}")
    columns = e.columns + [c for c in n.columns if c not in e.columns]
    index = {r[key]: i for i, r in enumerate(e.rows)}
    rows = list(e.rows)
    for r in n.rows:
        if r[key] in index:
            rows[index[r[key]]] = r
        else:
            index[r[key]] = len(rows)
            rows.append(r)
    return Tsv(columns, rows).to_text()


def rows_where(tsv: Tsv, column: str, values: Iterable[str]) -> list[dict[str, str]]:
    wanted = set(values)
    return [r for r in tsv.rows if r.get(column) in wanted]
