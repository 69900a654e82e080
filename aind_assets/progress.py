"""Per-step progress lines on stderr for the long ``aind-assets`` commands.

Lines, not a redrawn bar: they read the same in a terminal, a CI log and a piped run, and a step
that hangs says which one it is. ``AIND_ASSETS_QUIET=1`` silences them (stdout is untouched, so
``--json`` output stays clean either way).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

#: What long-running code calls to report a step; ``no_progress`` when nobody listens.
Progress = Callable[[str], None]


def no_progress(message: str) -> None:
    """The default reporter of library functions: says nothing."""


class StepPrinter:
    """Prints ``[aind-assets 12.3s] message`` on stderr, with time since the command started."""

    def __init__(self, quiet: bool | None = None) -> None:
        self.started = time.monotonic()
        self.quiet = bool(os.environ.get("AIND_ASSETS_QUIET")) if quiet is None else quiet

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.started
        print(f"[aind-assets {elapsed:5.1f}s] {message}", file=sys.stderr, flush=True)
