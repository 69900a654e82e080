"""Object-store helpers every HBCD stage uses (no Dagster): one-level listings, user metadata,
concurrent maps and small text reads."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from aind_assets.resources.links import link_refusal
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import ObjectInfo, is_s3

#: Largest object S3 copies server-side in one request (bigger ones stream through this machine).
S3_SERVER_COPY_LIMIT = 5 * 2**30


def relpath_of(info: ObjectInfo, prefix: str) -> str:
    return info.relative_to(prefix)


def list_children(store: ObjectStoreResource, url: str) -> tuple[list[ObjectInfo], list[str]]:
    """One level below ``url``: (files, folder URLs)."""
    fs = store.fs_for(url)
    path = url[len("s3://") :] if is_s3(url) else os.path.abspath(url)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return [], []
    files, dirs = [], []
    for raw in entries:
        name = raw["name"].rstrip("/")
        if name == path.rstrip("/"):
            continue
        full = f"s3://{name}" if is_s3(url) else name
        if raw.get("islink") and link_refusal(name, path) is not None:
            continue  # never followed out of the tree (reported by ObjectStoreResource)
        if raw.get("type") == "directory":
            dirs.append(full)
        else:
            files.append(store.object_info(url, raw))  # same conversion as list_objects()
    return files, dirs


def object_metadata(store: ObjectStoreResource, info: ObjectInfo) -> dict[str, str]:
    """User metadata of an object: from the listing (local xattrs) or a HEAD request (S3)."""
    if not is_s3(info.url):
        return dict(info.metadata)
    fs = store.fs_for(info.url)
    try:
        meta = fs.metadata(info.url[len("s3://") :])
    except FileNotFoundError:
        return {}
    return {str(k).lower(): str(v) for k, v in meta.items()}


def map_concurrently(
    store: ObjectStoreResource, fn: Callable[[Any], Any], items: Sequence[Any]
) -> list[Any]:
    return store.map_concurrently(fn, list(items))


def read_text(store: ObjectStoreResource, url: str) -> str | None:
    try:
        return store.get_bytes(url).decode("utf-8")
    except FileNotFoundError:
        return None
