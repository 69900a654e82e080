"""BIDS TSV as strings (pure). Every cell stays a string, so ``3`` never becomes ``3.0`` and
``n/a`` / ``_NaN_`` are kept verbatim. BIDS TSV has no quoting: cells are split on tabs."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from aind_assets.hbcd.formats.base import DeidentificationError, FileHandler, FormatContext
from aind_assets.hbcd.formats.text import decode_chunks, open_text
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.streams import ReadableBinary, WritableBinary

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


#: TSV columns holding subject/session identifiers or paths (matched case-insensitively).
ID_COLUMNS = frozenset(
    {
        "participant_id",
        "session_id",
        "filename",
        "source_filename",
        "subject_id",
        "dccid",
        "candid",
        "pscid",
    }
)
#: TSV columns holding site IDs (matched case-insensitively).
SITE_COLUMNS = frozenset({"site", "site_id", "siteid", "site_name", "sitename"})


# --- TSV ---------------------------------------------------------------------------------


def _iter_lines(chunks: Iterable[str]) -> Iterator[str]:
    buf = ""
    for chunk in chunks:
        buf += chunk
        if "\n" not in chunk:
            continue
        parts = buf.split("\n")
        for p in parts[:-1]:
            yield p + "\n"
        buf = parts[-1]
    if buf:
        yield buf


def _unmapped_participant(value: str, idmap: IdentityMap) -> bool:
    v = value.strip()
    if not v or v.lower() == "n/a":
        return False
    label = v[4:] if v.startswith("sub-") else v
    return not idmap.has_rc(label)


def _run_tsv(src: ReadableBinary, dst: WritableBinary, ctx: FormatContext) -> None:
    enc, body = open_text(src)
    dst.write(enc.bom)
    encoder = codecs.getincrementalencoder(enc.codec)(enc.errors)
    tr = ctx.translator.text
    id_idx: list[int] = []
    pid_idx: int | None = None
    dropped = 0
    header_done = False
    width = 0
    for number, line in enumerate(_iter_lines(decode_chunks(body, enc)), start=1):
        ending = "\r\n" if line.endswith("\r\n") else ("\n" if line.endswith("\n") else "")
        content = line[: len(line) - len(ending)]
        if not header_done:
            header_done = True
            names = [c.strip().lower() for c in content.split("\t")]
            width = len(names)
            id_idx = [i for i, c in enumerate(names) if c in ID_COLUMNS or c in SITE_COLUMNS]
            pid_idx = names.index("participant_id") if "participant_id" in names else None
            dst.write(encoder.encode(line))
            continue
        if not content.strip():
            dst.write(encoder.encode(line))
            continue
        cells = content.split("\t")
        if len(cells) > width:
            # a cell without a column cannot be classified (ID or not): refuse, name the line
            raise DeidentificationError(
                f"TSV line {number} has {len(cells)} cells but the header has {width} columns "
                "(a tab too many, or an unquoted tab in a value)"
            )
        for i in id_idx:
            if i < len(cells):
                cells[i] = tr(cells[i])
        if (
            ctx.deidentify
            and pid_idx is not None
            and pid_idx < len(cells)
            and _unmapped_participant(cells[pid_idx], ctx.idmap)
        ):
            dropped += 1
            continue
        dst.write(encoder.encode("\t".join(cells) + ending))
    dst.write(encoder.encode("", final=True))
    if dropped:
        ctx.notes.append(f"TSV: dropped {dropped} row(s) whose participant_id is not mapped")


TSV = FileHandler("tsv", _run_tsv)
