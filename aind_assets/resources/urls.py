"""Object URLs and listings as plain values (no Dagster, no client): shared by the object-store
resource and the pure planning code of every flow."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object.

    ``etag`` is the S3 ETag; on a local disk it is a version token from mtime and size (cheap,
    and it changes whenever the file does). ``metadata`` is S3 user metadata, or extended
    attributes on a local disk.
    """

    url: str
    size: int
    etag: str | None
    last_modified: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)

    def relative_to(self, prefix: str) -> str:
        return relative_key(self.url, prefix)


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def join_url(base: str, *parts: str) -> str:
    """Join key parts onto a URL or path with ``/``, ignoring empty parts."""
    parts = tuple(p.strip("/") for p in parts if p and p.strip("/"))
    return posixpath.join(base.rstrip("/"), *parts) if parts else base.rstrip("/")


def relative_key(url: str, prefix: str) -> str:
    prefix = prefix.rstrip("/") + "/"
    if not url.startswith(prefix):
        raise ValueError(f"{url!r} is not under {prefix!r}")
    return url[len(prefix) :]
