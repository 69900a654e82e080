"""Errors of release staging; messages name the release and what is wrong, never an identifier."""

from __future__ import annotations

from collections.abc import Sequence

from aind_assets.hbcd.leaks.scan import Finding
from aind_assets.hbcd.release.validity import Problem, format_problems


class StagingError(RuntimeError):
    """Staging could not complete; no completion marker was written."""


class SourceChangedError(StagingError):
    """A source changed or disappeared between the selection and the staging."""


class ReleaseAlreadyCompleteError(StagingError):
    """The release is complete and the release-ready data now differ."""


class ReleaseValidationError(StagingError):
    def __init__(self, release: str, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__(
            f"release {release} is not BIDS-valid ({len(problems)} problem(s)); nothing was "
            f"promoted:\n{format_problems(problems)}"
        )


class ReleaseLeakError(StagingError):
    def __init__(self, release: str, findings: Sequence[Finding]):
        self.findings = list(findings)
        shown = "\n".join(str(f) for f in findings[:20])  # paths are redacted by the scanner
        super().__init__(
            f"release {release}: {len(findings)} identifier finding(s) in the staged files; "
            f"nothing was promoted and the temporary copy was deleted:\n{shown}"
        )
