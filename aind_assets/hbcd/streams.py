"""Structural types for the binary streams the HBCD code reads and writes (pure).

``typing.IO[bytes]`` is nominal: ``gzip.GzipFile`` and ``io.RawIOBase`` subclasses (the
``PrefixedReader``/``GzipContentStream`` wrappers) are not ``IO[bytes]`` to a type checker,
yet the stream-taking functions only ever call ``read`` (sources) or ``write``/``flush``
(destinations). ``IO[bytes]``, ``GzipFile``, ``io.BytesIO``, fsspec files and the wrappers
all satisfy these protocols.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ReadableBinary", "WritableBinary"]


class ReadableBinary(Protocol):
    """A binary source: ``read(n)`` returns at most ``n`` bytes (all when ``n < 0``), ``b""``
    at end of stream."""

    def read(self, n: int = -1, /) -> bytes: ...


class WritableBinary(Protocol):
    """A binary destination (what ``gzip.GzipFile(fileobj=...)`` needs for writing)."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> object: ...
