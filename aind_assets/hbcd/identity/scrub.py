"""Errors without identifiers: :class:`HbcdError` and the :class:`Scrubber` that every stage
puts storage-client messages through (no Dagster).

Exceptions from storage clients quote identified keys; they never propagate with their text.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Iterator

from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import (
    UnmappedIdentifierError,
)


class IdentifierFreeError(Exception):
    """Raised by the platform's own HBCD code with a message built from de-identified values
    only: reported as it is (after scrubbing), without its type name."""


class HbcdError(IdentifierFreeError, RuntimeError):
    """A failure of the HBCD flow; the message holds no identifier."""


# --- privacy: scrub identifiers out of any text -------------------------------------------


class Scrubber:
    """Replaces every DCCID, PSCID and site ID *as a substring* (case-insensitive) with
    ``<DCCID>``/``<PSCID>``/``<site>``. Over-redaction is harmless in error messages; missing
    an identifier embedded in a longer token (``%2F123456``) is not. The pattern is compiled
    on first use and cached per identity map."""

    _compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, idmap: IdentityMap | None) -> None:
        self._idmap = idmap

    def _pattern(self) -> tuple[re.Pattern | None, dict[str, str]]:
        if self._idmap is None:
            return None, {}
        cached = Scrubber._compiled.get(self._idmap)
        if cached is None:
            kinds = dict(self._idmap.identifiers().items())
            values = sorted(kinds, key=len, reverse=True)
            pattern = (
                re.compile("|".join(re.escape(v) for v in values), re.IGNORECASE)
                if values
                else None
            )
            cached = Scrubber._compiled[self._idmap] = (pattern, kinds)
        return cached

    def __call__(self, text: str) -> str:
        pattern, kinds = self._pattern()
        if pattern is None:
            return text
        return pattern.sub(lambda m: f"<{kinds[m.group().casefold()]}>", text)

    def __repr__(self) -> str:
        return "Scrubber(<values hidden>)"


@contextlib.contextmanager
def scrubbed_errors(idmap: IdentityMap | None, what: str) -> Iterator[None]:
    """Re-raise any exception as :class:`HbcdError` with a scrubbed message and no chained
    exception (whose text could quote an identified key)."""
    try:
        yield
    except HbcdError as e:
        raise HbcdError(Scrubber(idmap)(str(e))) from None
    except Exception as e:  # noqa: BLE001 - every foreign error is re-raised, scrubbed
        raise HbcdError(f"{what}: {type(e).__name__}: {Scrubber(idmap)(str(e))}") from None


def error_reason(e: BaseException, scrub: Scrubber) -> str:
    if isinstance(e, IdentifierFreeError):
        return scrub(str(e))
    if isinstance(e, UnmappedIdentifierError):
        return "names a subject missing from the identity map"
    return f"{type(e).__name__}: {scrub(str(e))}"
