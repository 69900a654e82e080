"""Object URLs and listings as plain values (no Dagster, no client): shared by the object-store
resource and the pure planning code of every flow."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote


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


#: The AWS console's page of an S3 object (``prefix`` = its key) and of a folder.
S3_CONSOLE_OBJECT = "https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"
S3_CONSOLE_FOLDER = "https://s3.console.aws.amazon.com/s3/buckets/{bucket}?prefix={key}/"


def browse_url(url: str, endpoint_url: str | None = None, *, folder: bool = False) -> str:
    """A URL a browser opens for a stored object (or ``folder``), for links in the UI.

    * S3 on AWS (no endpoint): the S3 console's page of the object or folder;
    * S3 on another server (``endpoint_url``, e.g. SeaweedFS, MinIO): the object's path-style
      URL on that endpoint;
    * a local path: its ``file://`` URL.
    """
    if is_s3(url):
        bucket, _, key = url[len("s3://") :].partition("/")
        key = key.strip("/") if folder else key
        if endpoint_url:
            return f"{endpoint_url.rstrip('/')}/{bucket}/{quote(key)}" + ("/" if folder else "")
        template = S3_CONSOLE_FOLDER if folder else S3_CONSOLE_OBJECT
        return template.format(bucket=bucket, key=quote(key, safe="/"))
    if "://" in url:
        return url
    return "file://" + quote(posixpath.abspath(url)) + ("/" if folder else "")
