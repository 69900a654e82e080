"""Object storage through fsspec: S3 (s3fs, any endpoint) or a local directory, one interface.

Every method takes full URLs (``s3://bucket/key`` or an absolute local path), so one resource
serves several roots (the HBCD identified, de-identified and staging buckets) with one set of
credentials; ``url(*parts)`` builds URLs under the resource's own ``root``.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, TypeVar, cast, overload

import fsspec
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr
from upath import UPath

from aind_assets.resources.links import link_refusal, refused_links_under
from aind_assets.resources.urls import ObjectInfo, is_s3, join_url

CHUNK = 8 * 2**20
_XATTR_PREFIX = "user.aind."

T = TypeVar("T")
R = TypeVar("R")


class ObjectStoreResource(ConfigurableResource):
    """S3 (with an optional endpoint URL, e.g. a local SeaweedFS) or a local directory.

    Usable outside Dagster: ``ObjectStoreResource(root="/tmp/store")``.
    """

    root: str = Field(description="Default root: s3://bucket/prefix or a local directory")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (None: AWS)")
    access_key_id: str | None = Field(default=None, description="S3 key; None uses the AWS chain")
    secret_access_key: str | None = Field(default=None, description="S3 secret; use an EnvVar")
    region: str = "us-east-1"
    max_concurrency: int = Field(default=16, description="Parallel listings and copies")
    anonymous_buckets: list[str] = Field(
        default_factory=list,
        description="S3 buckets read without credentials (public data beside private buckets)",
    )
    max_attempts: int | None = Field(
        default=None,
        description="Attempts per S3 request in the S3 client before failing (None: its "
        "default retries); 1 fails soon when the endpoint is down",
    )

    _fs: dict[str, fsspec.AbstractFileSystem] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # -- filesystems --------------------------------------------------------------------------
    @property
    def storage_options(self) -> dict[str, Any]:
        """Options for s3fs / UPath (empty for local paths)."""
        opts: dict[str, Any] = {
            "use_listings_cache": False,
            "client_kwargs": {"region_name": self.region},
            "config_kwargs": {"max_pool_connections": max(10, self.max_concurrency * 2)},
        }
        if self.max_attempts is not None:
            opts["config_kwargs"]["retries"] = {"max_attempts": self.max_attempts}
        if self.endpoint_url:
            opts["client_kwargs"]["endpoint_url"] = self.endpoint_url
        if self.access_key_id:
            opts["key"] = self.access_key_id
        if self.secret_access_key:
            opts["secret"] = self.secret_access_key
        return opts

    def is_anonymous(self, url: str) -> bool:
        """True for ``s3://`` URLs of an ``anonymous_buckets`` bucket."""
        return is_s3(url) and url[len("s3://") :].split("/", 1)[0] in self.anonymous_buckets

    def storage_options_for(self, url: str) -> dict[str, Any]:
        """s3fs options for ``url``'s bucket: anonymous for ``anonymous_buckets``, else
        :attr:`storage_options` (empty for local paths)."""
        if not is_s3(url):
            return {}
        opts = self.storage_options
        if self.is_anonymous(url):
            opts = {k: v for k, v in opts.items() if k not in ("key", "secret")}
            opts["anon"] = True
        return opts

    def fs_for(self, url: str) -> fsspec.AbstractFileSystem:
        proto = ("s3-anon" if self.is_anonymous(url) else "s3") if is_s3(url) else "file"
        with self._lock:
            if proto not in self._fs:
                self._fs[proto] = (
                    fsspec.filesystem(
                        "s3", skip_instance_cache=True, **self.storage_options_for(url)
                    )
                    if proto != "file"
                    else fsspec.filesystem("file", auto_mkdir=True)
                )
            return self._fs[proto]

    def upath(self, url: str | None = None) -> UPath:
        url = url or self.root
        return UPath(url, **self.storage_options) if is_s3(url) else UPath(url)

    def url(self, *parts: str) -> str:
        return join_url(self.root, *parts)

    def _path(self, url: str) -> str:
        return url[len("s3://") :] if is_s3(url) else os.path.abspath(url)

    def _url(self, path: str, like: str) -> str:
        return f"s3://{path}" if is_s3(like) else path

    def ensure_root(self, url: str | None = None) -> None:
        """Create the bucket (S3) or directory (local) of ``url`` if it is missing."""
        url = url or self.root
        fs = self.fs_for(url)
        if is_s3(url):
            bucket = self._path(url).split("/", 1)[0]
            if not fs.exists(bucket):
                fs.mkdir(bucket)
        else:
            os.makedirs(self._path(url), exist_ok=True)

    # -- listing ------------------------------------------------------------------------------
    def object_info(self, url_like: str, raw: Mapping[str, Any]) -> ObjectInfo:
        path = raw["name"]
        url = self._url(path, url_like)
        if is_s3(url_like):
            lm = raw.get("LastModified") or datetime.now(UTC)
            etag = (raw.get("ETag") or "").strip('"') or None
            return ObjectInfo(url, int(raw.get("size", 0)), etag, lm.astimezone(UTC), {})
        mtime = raw.get("mtime", 0.0)
        token = f"{int(mtime * 1e9):x}-{int(raw.get('size', 0)):x}"
        return ObjectInfo(
            url,
            int(raw.get("size", 0)),
            token,
            datetime.fromtimestamp(mtime, UTC),
            _local_meta(path),
        )

    def list_objects(self, prefix: str, *, folder: bool = False) -> list[ObjectInfo]:
        """Every object under ``prefix`` (recursive), sorted by URL; empty if none. ``folder``:
        ``prefix`` is a folder, never an object: on S3 one ``ListObjectsV2`` per 1,000 keys,
        where s3fs would add a listing and a HEAD to tell an empty folder from an object."""
        fs = self.fs_for(prefix)
        path = self._path(prefix)
        if folder and is_s3(prefix):
            return sorted(self._list_folder(fs, prefix), key=lambda i: i.url)
        try:
            found = fs.find(path, detail=True, withdirs=False)
        except FileNotFoundError:
            return []
        infos = [
            self.object_info(prefix, raw)
            for raw in found.values()
            if raw.get("type") != "directory"
            and not (raw.get("islink") and link_refusal(raw["name"], path) is not None)
        ]
        return sorted(infos, key=lambda i: i.url)

    def _list_folder(self, fs: Any, prefix: str) -> list[ObjectInfo]:
        bucket, _, key = self._path(prefix).partition("/")
        key = key.rstrip("/") + "/" if key.strip("/") else ""
        out: list[ObjectInfo] = []
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
        while True:
            try:
                page = fs.call_s3("list_objects_v2", **kwargs)
            except FileNotFoundError:  # no such bucket
                return []
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):  # folder markers are not objects
                    raw = {"name": f"{bucket}/{obj['Key']}", "size": obj.get("Size", 0), **obj}
                    out.append(self.object_info(prefix, raw))
            if not page.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def refused_links(self, prefix: str) -> dict[str, str]:
        """``{url: reason}`` of the symbolic links under a local ``prefix`` that listings leave
        out (pointing outside it, dangling, or to a folder; see :mod:`.links`); ``{}`` on S3."""
        if is_s3(prefix):
            return {}
        return refused_links_under(self._path(prefix))

    def list_many(
        self, prefixes: Iterable[str], *, folder: bool = False
    ) -> dict[str, list[ObjectInfo]]:
        """List several prefixes concurrently (one request stream each; ``folder``: as in
        :meth:`list_objects`)."""
        prefixes = list(prefixes)
        found = self.map_concurrently(lambda p: self.list_objects(p, folder=folder), prefixes)
        return dict(zip(prefixes, found, strict=True))

    def glob(self, pattern: str) -> list[str]:
        fs = self.fs_for(pattern)
        return sorted(self._url(p, pattern) for p in fs.glob(self._path(pattern)) if fs.isfile(p))

    def info(self, url: str) -> ObjectInfo:
        fs = self.fs_for(url)
        raw = fs.info(self._path(url))
        info = self.object_info(url, raw)
        if is_s3(url):
            meta = fs.metadata(self._path(url))
            info = ObjectInfo(info.url, info.size, info.etag, info.last_modified, dict(meta))
        return info

    def exists(self, url: str) -> bool:
        return self.fs_for(url).exists(self._path(url))

    # -- reading and writing ------------------------------------------------------------------
    @overload
    def open(
        self,
        url: str,
        mode: Literal["rb", "wb"] = "rb",
        metadata: Mapping[str, str] | None = None,
        *,
        block_size: int | None = None,
    ) -> IO[bytes]: ...
    @overload
    def open(
        self,
        url: str,
        mode: str,
        metadata: Mapping[str, str] | None = None,
        *,
        block_size: int | None = None,
    ) -> IO[Any]: ...
    def open(
        self,
        url: str,
        mode: str = "rb",
        metadata: Mapping[str, str] | None = None,
        *,
        block_size: int | None = None,
    ) -> IO[Any]:
        """Open for streaming. Writes are all-or-nothing: the object appears only when the
        handle is closed after a clean ``with`` block; an exception inside it discards the
        upload (S3) or the temporary file (local), so a half-written object never exists.
        User metadata is attached to the object. ``"rb"`` and ``"wb"`` give ``IO[bytes]``.
        ``block_size`` (S3): read-ahead and multipart part size (s3fs's default is 50 MiB; at
        least 5 MiB for writes), the memory a handle holds."""
        kwargs: dict[str, Any] = {"block_size": block_size} if block_size and is_s3(url) else {}
        if "w" not in mode:
            return self.fs_for(url).open(self._path(url), mode, **kwargs)
        # the writer has write/close/with itself and hands every other file method to the file
        writer = _AtomicWriter(
            self.fs_for(url), self._path(url), mode, metadata, is_s3(url), **kwargs
        )
        return cast(IO[Any], writer)

    def put_bytes(self, url: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        """Write a whole object, atomically. On S3 up to :data:`CHUNK` bytes: one ``PutObject``
        (not the three requests of a one-part multipart upload)."""
        if is_s3(url) and len(data) <= CHUNK:
            bucket, key = self._path(url).split("/", 1)
            extra: dict[str, Any] = {"Metadata": dict(metadata)} if metadata else {}
            self.fs_for(url).call_s3("put_object", Bucket=bucket, Key=key, Body=data, **extra)
            return
        with self.open(url, "wb", metadata) as f:
            f.write(data)

    def get_bytes(self, url: str) -> bytes:
        """A whole object; on S3 one ``GetObject`` (s3fs would first ask its size: a HEAD)."""
        if is_s3(url):
            return self.fs_for(url).cat_file(self._path(url), max_concurrency=1)
        return self.fs_for(url).cat_file(self._path(url))

    def put_file(self, local: str | Path, url: str) -> None:
        self.fs_for(url).put_file(str(local), self._path(url))

    def get_file(self, url: str, local: str | Path) -> None:
        self.fs_for(url).get_file(self._path(url), str(local))

    def put_tree(self, local_dir: str | Path, url: str) -> list[str]:
        """Upload every file under ``local_dir`` to ``url``, concurrently; returns the URLs."""
        local_dir = Path(local_dir)
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        dests = [join_url(url, p.relative_to(local_dir).as_posix()) for p in files]
        self.map_concurrently(
            lambda pair: self.put_file(*pair), list(zip(files, dests, strict=True))
        )
        return dests

    # BaseModel.copy is pydantic's deprecated v1 model copy (model_copy replaces it); on this
    # resource ``copy`` copies objects, as the rest of the object-store interface reads.
    def copy(  # type: ignore[override]
        self,
        src: str,
        dst: str,
        *,
        metadata: Mapping[str, str] | None = None,
        transform: Callable[[IO[bytes], IO[bytes]], None] | None = None,
    ) -> None:
        """Stream ``src`` to ``dst`` in chunks (bounded memory), between any two roots.

        ``transform(reader, writer)`` may rewrite the bytes on the way; S3-to-S3 copies with no
        transform and no new metadata are done server-side.
        """
        if transform is None and metadata is None and is_s3(src) and is_s3(dst):
            self.fs_for(src).copy(self._path(src), self._path(dst))
            return
        with self.open(src, "rb") as r, self.open(dst, "wb", metadata) as w:
            if transform is None:
                shutil.copyfileobj(r, w, CHUNK)
            else:
                transform(r, w)

    def copy_many(self, pairs: Sequence[tuple[str, str]], **kwargs: Any) -> None:
        self.map_concurrently(lambda p: self.copy(p[0], p[1], **kwargs), list(pairs))

    def delete(self, urls: str | Iterable[str], *, recursive: bool = False) -> None:
        """Delete objects (or whole prefixes with ``recursive``); missing ones are ignored."""
        urls = [urls] if isinstance(urls, str) else list(urls)
        by_fs: dict[str, list[str]] = {}
        for u in urls:
            by_fs.setdefault("s3" if is_s3(u) else "file", []).append(u)
        for group in by_fs.values():
            fs = self.fs_for(group[0])
            paths = [self._path(u) for u in group]
            if is_s3(group[0]) and not recursive:  # DeleteObjects ignores missing keys: no HEADs
                fs.rm(paths)
                continue
            existing = [p for p in paths if fs.exists(p)]
            if existing:
                fs.rm(existing, recursive=recursive)

    def map_concurrently(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` on up to ``max_concurrency`` threads, results in order."""
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))


# -- local user metadata as extended attributes ----------------------------------------------
def _local_meta(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path)
    except OSError:
        return {}
    return {
        n[len(_XATTR_PREFIX) :]: os.getxattr(path, n).decode()
        for n in names
        if n.startswith(_XATTR_PREFIX)
    }


class _AtomicWriter:
    """A write handle that commits on a clean close and discards on an exception."""

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        path: str,
        mode: str,
        metadata: Mapping[str, str] | None,
        s3: bool,
        block_size: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"autocommit": False}
        if block_size:
            kwargs["block_size"] = block_size
        if s3 and metadata:
            kwargs["Metadata"] = dict(metadata)
        self._f = fs.open(path, mode, **kwargs)
        self._path, self._meta, self._s3 = path, dict(metadata or {}), s3
        self._done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def write(self, data: bytes) -> int:
        return self._f.write(data)

    def close(self) -> None:
        """Commit: the object becomes visible, complete, with its metadata."""
        if self._done:
            return
        self._done = True
        self._f.close()
        self._f.commit()
        if not self._s3:
            for k, v in self._meta.items():
                try:
                    os.setxattr(self._path, _XATTR_PREFIX + k, str(v).encode())
                except OSError:  # filesystem without user xattrs: metadata is best effort locally
                    break

    def discard(self) -> None:
        if not self._done:
            self._done = True
            self._f.discard()
            if self._s3:
                self._f.closed = True  # else its finalizer would still try to upload the buffer

    def __enter__(self) -> _AtomicWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
