"""What every file-format handler shares (pure): the handler type, the context it runs in, and
the errors it raises (messages hold no identifier).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import (
    Translator,
)
from aind_assets.hbcd.identity.scrub import IdentifierFreeError
from aind_assets.hbcd.streams import ReadableBinary, WritableBinary

CHUNK = 1 << 20


class UnsupportedFileType(IdentifierFreeError, ValueError):
    """Not in the allow-list: the file must not be copied (the message holds the
    de-identified path only)."""


class DeidentificationError(IdentifierFreeError, ValueError):
    """The handler could not process the content (message holds no identifier)."""


@dataclass
class FormatContext:
    translator: Translator
    deidentify: bool
    idmap: IdentityMap
    notes: list[str]
    #: how the handler wrote the file, for counting (e.g. the NIfTI-gz modes)
    outcomes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FileHandler:
    name: str
    run: Callable[[ReadableBinary, WritableBinary, FormatContext], None] = field(repr=False)
