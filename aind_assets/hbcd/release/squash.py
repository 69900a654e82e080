"""Squash (pure): ``derivatives/ses-*/<pipeline>/rest`` becomes ``derivatives/<pipeline>/rest``. Two
sources of one destination are allowed only with identical content (e.g. the same
``dataset_description.json`` in every session folder); otherwise :class:`SquashConflictError`
names both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aind_assets.hbcd.release.spec import MANIFESTS


# --- squash ----------------------------------------------------------------------------------
class SquashConflictError(ValueError):
    """Two sessions write the same derivative path with different content."""

    def __init__(self, dest: str, sources: Sequence[str]):
        self.dest, self.sources = dest, list(sources)
        super().__init__(
            f"squash conflict: {dest} is written by both {sources[0]} and {sources[1]}"
            + (f" (and {len(sources) - 2} more)" if len(sources) > 2 else "")
            + " with different content; fix the derivatives or leave one session out"
        )


def squash_derivative_relpath(relpath: str) -> str | None:
    """``ses-<label>/<pipeline>/rest`` -> ``<pipeline>/rest`` (relative to the derivatives
    root); ``None`` for ``cbrain_misc`` and for paths outside a ``ses-*`` folder."""
    parts = relpath.strip("/").split("/")
    if len(parts) < 3 or not parts[0].startswith("ses-") or parts[1] == MANIFESTS:
        return None
    return "/".join(parts[1:])


@dataclass
class SquashPlan:
    mapping: dict[str, str] = field(default_factory=dict)  # release relpath -> source relpath
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # identical sources per dest


def squash_derivatives(
    relpaths: Iterable[str], same_content: Callable[[str, str], bool] | None = None
) -> SquashPlan:
    """Plan the squash of ``ses-*/<pipeline>/...`` into ``<pipeline>/...``. When several
    sessions provide one destination, ``same_content(a, b)`` must say they are identical (the
    first in sorted order is used and the others are listed in ``duplicates``); otherwise (or
    with no ``same_content``) :class:`SquashConflictError` names both sources."""
    plan = SquashPlan()
    for src in sorted(relpaths):
        dst = squash_derivative_relpath(src)
        if dst is None:
            continue
        if dst in plan.mapping:
            first = plan.mapping[dst]
            if same_content is None or not same_content(first, src):
                raise SquashConflictError(dst, [first, src])
            plan.duplicates.setdefault(dst, [first]).append(src)
            continue
        plan.mapping[dst] = src
    return plan


def release_prefixes(release: str) -> tuple[str, str]:
    """``(<release>/hbcd/rawdata/, <release>/hbcd/derivatives/)`` in the staging bucket."""
    release = release.strip("/")
    if not release or "/" in release:
        raise ValueError("release identifier must be a single path segment")
    return f"{release}/hbcd/rawdata/", f"{release}/hbcd/derivatives/"
