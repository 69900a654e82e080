"""Planning re-identification (pure): de-identified ``derivatives`` -> identified copy. Each copy
carries ``source-last-modified`` and ``source-etag`` of its de-identified source; orphans are
deleted, sources that are newer (changed) are replaced, new ones copied. A ledger (kept on the
identified side) lets unchanged objects be recognised from listings alone; without a ledger
entry the object's metadata is checked. Identified paths appear only in ``dst``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aind_assets.hbcd.copies import DestObject, Write, iso
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import (
    reidentify_path,
    subject_labels,
)

#: Re-identification rewrites the contents of these types only; others are copied as they are.
REIDENTIFY_CONTENT_EXTENSIONS = (".csv", ".html", ".json", ".txt", ".toml", ".tsv", ".log")


def reidentify_content(relpath: str) -> bool:
    """Whether re-identification rewrites this file's content (else: byte copy)."""
    name = relpath.rsplit("/", 1)[-1].lower()
    return name.endswith(REIDENTIFY_CONTENT_EXTENSIONS)


@dataclass(frozen=True)
class ReidLedgerEntry:
    src_etag: str | None
    src_last_modified: str  # ISO
    dst_etag: str | None


@dataclass
class ReidentifyPlan:
    copy: list[Write] = field(default_factory=list)  # reason "new" or "newer"
    delete: list[str] = field(default_factory=list)  # identified rel paths (orphans)
    unchanged: list[str] = field(default_factory=list)  # de-identified rel paths
    #: (de-identified rel, identified rel): exists but no ledger entry: compare metadata
    verify: list[Write] = field(default_factory=list)
    #: de-identified paths naming a subject not in the map (not copied)
    unmapped: list[str] = field(default_factory=list)

    @property
    def orphans(self) -> int:
        return len(self.delete)


def plan_reidentify(
    deidentified: Iterable[DestObject],
    identified: Iterable[DestObject],
    idmap: IdentityMap,
    ledger: Mapping[str, ReidLedgerEntry] | None = None,
) -> ReidentifyPlan:
    """Plan the sync of de-identified derivatives (``deidentified``, relative to their
    ``derivatives`` folder) to the identified copy (``identified``, likewise)."""
    ledger = ledger or {}
    plan = ReidentifyPlan()
    have = {d.rel: d for d in identified}
    expected: set[str] = set()
    for src in sorted(deidentified, key=lambda d: d.rel):
        labels_ok = all(idmap.has_rc(lbl) for lbl in subject_labels(src.rel))
        if not labels_ok:
            plan.unmapped.append(src.rel)
            continue
        dst = reidentify_path(src.rel, idmap)
        expected.add(dst)
        old = have.get(dst)
        write = Write(src.rel, dst, src.etag, "new", src.last_modified)
        if old is None:
            plan.copy.append(write)
            continue
        entry = ledger.get(src.rel)
        if entry is None:
            plan.verify.append(write)
        elif (
            entry.src_etag == src.etag
            and entry.src_last_modified == iso(src.last_modified)
            and entry.dst_etag == old.etag
        ):
            plan.unchanged.append(src.rel)
        else:
            plan.copy.append(Write(src.rel, dst, src.etag, "newer", src.last_modified))
    plan.delete = sorted(rel for rel in have if rel not in expected)
    return plan
