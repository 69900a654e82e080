"""Object-store helpers every HBCD stage uses (no Dagster): one-level listings, user metadata,
concurrent maps and small text reads."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import fsspec.asyn

from aind_assets.resources.links import link_refusal
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import ObjectInfo, is_s3

#: Largest object S3 copies server-side in one request (bigger ones stream through this machine).
S3_SERVER_COPY_LIMIT = 5 * 2**30
#: Read-ahead and multipart part size of the HBCD stages' streams (s3fs's default is 50 MiB per
#: handle; a session streams several files at once).
STREAM_BLOCK = 8 * 2**20


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


def read_range(
    store: ObjectStoreResource, url: str, start: int, end: int, *, if_match: str | None = None
) -> bytes:
    """Bytes ``start`` to ``end`` (exclusive) of an object: one ranged ``GetObject`` on S3.
    ``if_match``: only while the object still has this ETag (S3; else an error: it changed
    while being read), so that several ranges of one object are of one version."""
    if end <= start:
        return b""
    if not is_s3(url):
        with open(url, "rb") as f:
            f.seek(start)
            return f.read(end - start)
    return _ranged_get(store, url, start, end, if_match)[0]


def _ranged_get(
    store: ObjectStoreResource, url: str, start: int, end: int, if_match: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """One ranged ``GetObject`` (``start`` to ``end``, exclusive): the bytes and the object's
    user metadata, which the response carries anyway."""
    fs = store.fs_for(url)
    bucket, key = url[len("s3://") :].split("/", 1)
    extra = {"IfMatch": f'"{if_match}"'} if if_match else {}

    async def get() -> tuple[bytes, dict[str, str]]:
        resp = await fs._call_s3(
            "get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", **extra
        )
        try:
            data = await resp["Body"].read()
        finally:
            resp["Body"].close()
        meta = {str(k).lower(): str(v) for k, v in (resp.get("Metadata") or {}).items()}
        return bytes(data), meta

    return fsspec.asyn.sync(fs.loop, get)


def read_text(store: ObjectStoreResource, url: str) -> str | None:
    try:
        return store.get_bytes(url).decode("utf-8")
    except FileNotFoundError:
        return None


def server_copy(
    store: ObjectStoreResource,
    src_url: str,
    dst_url: str,
    metadata: Mapping[str, str],
    *,
    if_match: str | None = None,
) -> str | None:
    """Copy one object with new user metadata without its bytes passing through this machine
    (S3 ``CopyObject``, both URLs on the same S3 endpoint, below :data:`S3_SERVER_COPY_LIMIT`; a
    local file copy otherwise). ``if_match``: copy only while the source still has this ETag
    (else ``FileNotFoundError``/``OSError``). Returns the copy's ETag when the store tells it."""
    if is_s3(src_url) and is_s3(dst_url):
        fs = store.fs_for(src_url)
        sb, sk = src_url[len("s3://") :].split("/", 1)
        db, dk = dst_url[len("s3://") :].split("/", 1)
        extra: dict[str, Any] = {"CopySourceIfMatch": f'"{if_match}"'} if if_match else {}
        out = fs.call_s3(
            "copy_object",
            Bucket=db,
            Key=dk,
            CopySource={"Bucket": sb, "Key": sk},
            Metadata=dict(metadata),
            MetadataDirective="REPLACE",
            **extra,
        )
        etag = (out.get("CopyObjectResult") or {}).get("ETag")
        return str(etag).strip('"') if etag else None
    with store.open(src_url, "rb") as src, store.open(dst_url, "wb", metadata) as dst:
        shutil.copyfileobj(src, dst, 8 << 20)
    return None


def open_read(store: ObjectStoreResource, url: str, size: int | None = None) -> Any:
    """A streaming reader with :data:`STREAM_BLOCK` read-ahead; on S3 a known ``size`` (from the
    listing) saves the HEAD request that opening would make."""
    if not is_s3(url):
        return store.open(url, "rb")
    kwargs: dict[str, Any] = {"block_size": STREAM_BLOCK}
    if size is not None:
        kwargs["size"] = size
    return store.fs_for(url).open(url[len("s3://") :], "rb", **kwargs)


def read_head(store: ObjectStoreResource, info: ObjectInfo, n: int) -> tuple[bytes, dict[str, str]]:
    """The first ``n`` bytes of an object and its user metadata (one ranged GET on S3)."""
    if not is_s3(info.url):
        with open(info.url, "rb") as f:
            return f.read(n), dict(info.metadata)
    return _ranged_get(store, info.url, 0, n)


def put_small(
    store: ObjectStoreResource, url: str, data: bytes, metadata: Mapping[str, str]
) -> str | None:
    """Write a small object in one request; returns its ETag (S3: from the response)."""
    if is_s3(url):
        bucket, key = url[len("s3://") :].split("/", 1)
        out = store.fs_for(url).call_s3(
            "put_object", Bucket=bucket, Key=key, Body=data, Metadata=dict(metadata)
        )
        etag = out.get("ETag")
        return str(etag).strip('"') if etag else None
    store.put_bytes(url, data, metadata)
    return None


def etag_of(store: ObjectStoreResource, url: str) -> str | None:
    """An object's ETag (one HEAD on S3; the listing token locally)."""
    fs = store.fs_for(url)
    raw = fs.info(url[len("s3://") :] if is_s3(url) else url)
    return store.object_info(url, raw).etag


def full_listing(store: ObjectStoreResource, root: str) -> list[ObjectInfo]:
    """Every object under ``root``: one level, then every folder listed concurrently."""
    files, dirs = list_children(store, root)
    for infos in store.list_many(dirs, folder=True).values():
        files.extend(infos)
    return files
