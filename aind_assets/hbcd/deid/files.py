"""De-identifying one file on object storage (no Dagster): which bytes pass through this machine.

* **Small files** (up to :data:`SMALL`) are de-identified in memory: one GET, then one PUT.
* **Larger files** stream (multipart uploads, :data:`~aind_assets.hbcd.storage.STREAM_BLOCK`
  buffers).
* **A ``.nii.gz`` whose de-identified bytes are its source bytes** (minimal gzip header, one
  member, a NIfTI header and extensions that hold no identifier) is copied server-side, the copy
  conditional on the listed version (ETag). How it is checked first is a setting
  (``verify_unchanged``):

  - **verified** (the default): this machine reads and inflates the whole file while the server
    copies it, checking CRC-32 and ISIZE; a corrupt or truncated file fails, and its copy is
    deleted;
  - **trusted**: only the head (a ranged GET of :data:`PROBE_BYTES`) and the last 8 bytes are
    read; the trailer's ISIZE must equal the size the NIfTI header declares
    (:func:`~aind_assets.hbcd.formats.nifti_gz.trailer_proves_one_member`), which a truncated
    file, trailing bytes or a second member fail. The voxel data never passes through this
    machine; a flipped bit in it is copied as it is (its CRC-32 still tells every reader).
    The same proof lets a file that only needs a minimal gzip header (an original name, a
    time) keep its deflate stream and trailer without inflating them.

Every output is scanned for identifiers as it is written: one that holds any is not written and
the file fails.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from concurrent.futures import Future, ThreadPoolExecutor

from aind_assets.hbcd.copies import (
    META_DEID_RULES,
    META_SOURCE_ETAG,
    META_VOXELS,
    VOXELS_UNCHANGED,
    Write,
)
from aind_assets.hbcd.deid.discovery import RULES_VERSION, SourceObject
from aind_assets.hbcd.deid.scanning import OutputTap, refuse_leaking_output
from aind_assets.hbcd.formats.base import DeidentificationError
from aind_assets.hbcd.formats.dispatch import deidentify_file, handler_for
from aind_assets.hbcd.formats.gz import GzipFormatError
from aind_assets.hbcd.formats.nifti_gz import (
    COPIED,
    IDENTICAL,
    NIFTI_GZ,
    probe_deidentified,
    trailer_proves_one_member,
    verify_gzip,
)
from aind_assets.hbcd.formats.text import PrefixedReader, read_exact_or_less
from aind_assets.hbcd.identity.idmap import Identifiers, IdentityMap
from aind_assets.hbcd.storage import (
    S3_SERVER_COPY_LIMIT,
    STREAM_BLOCK,
    open_read,
    put_small,
    read_range,
    server_copy,
)
from aind_assets.hbcd.streams import ReadableBinary
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url

__all__ = ["PROBE_BYTES", "SMALL", "SERVER_SIDE_COPY", "write_one"]

#: Files up to this size are de-identified in memory: one GET, then one PUT (or one server-side
#: copy); larger ones stream.
SMALL = 8 << 20
#: How much of a ``.nii.gz`` is read to judge it (gzip header + the compressed NIfTI prefix).
PROBE_BYTES = 256 << 10
SERVER_SIDE_COPY = "server-side copy"


def write_one(
    store: ObjectStoreResource,
    idmap: IdentityMap,
    ids: Identifiers,
    w: Write,
    src_root: str,
    dst_root: str,
    sources: dict[str, SourceObject],
    notes: list[str],
    verify_unchanged: bool = True,
) -> tuple[str, str | None]:
    """De-identify one file (see the module docstring). Returns how it was written and the ETag
    its scan can be recorded under (``None``: the leak check reads it)."""
    src_url, dst_url = join_url(src_root, w.src), join_url(dst_root, w.dst)
    meta = {META_SOURCE_ETAG: w.etag or "", META_DEID_RULES: RULES_VERSION}
    nifti_gz = handler_for(w.src) is NIFTI_GZ
    if nifti_gz:
        meta[META_VOXELS] = VOXELS_UNCHANGED
    size = sources[w.src].size
    head = b""
    if nifti_gz and not verify_unchanged and PROBE_BYTES < size < S3_SERVER_COPY_LIMIT:
        head = read_range(store, src_url, 0, PROBE_BYTES, if_match=w.etag)
        proven = _trusted(store, head, size, src_url, dst_url, meta, w, idmap, ids)
        if proven:
            return proven
    if size <= SMALL:  # in memory: one GET, then one PUT or one server-side copy
        remainder = read_range(store, src_url, len(head), size, if_match=w.etag) if head else None
        data = head + remainder if remainder is not None else store.get_bytes(src_url)
        if nifti_gz and not head:
            first = data[:PROBE_BYTES]
            rest = io.BytesIO(data[len(first) :])
            done = _copy_if_identical(store, first, rest, src_url, dst_url, meta, w, idmap)
            if done:
                return SERVER_SIDE_COPY, done if isinstance(done, str) else None
        out = io.BytesIO()
        outcomes: list[str] = []
        deidentify_file(w.src, io.BytesIO(data), out, idmap, notes=notes, outcomes=outcomes)
        written = out.getvalue()
        complete = refuse_leaking_output(w.dst, written, ids, voxels_unchanged=nifti_gz)
        etag = put_small(store, dst_url, written, meta)
        outcome = outcomes[0] if outcomes else "rewritten"
        if not complete or etag != hashlib.md5(written).hexdigest():
            etag = None  # the check reads it
        return outcome, etag
    outcomes = []
    for attempt in (0, 1):
        with open_read(store, src_url, size) as src:
            reader: ReadableBinary = src
            if head:  # read once already: not again
                src.seek(len(head))
                reader = PrefixedReader(head, src)
            elif attempt == 0 and nifti_gz and size < S3_SERVER_COPY_LIMIT:
                first = read_exact_or_less(src, PROBE_BYTES)
                done = _copy_if_identical(store, first, src, src_url, dst_url, meta, w, idmap)
                if done is None:
                    continue
                if done:
                    return SERVER_SIDE_COPY, done if isinstance(done, str) else None
                reader = PrefixedReader(first, src)
            with store.open(dst_url, "wb", meta, block_size=STREAM_BLOCK) as raw:
                tap = OutputTap(raw)
                deidentify_file(w.src, reader, tap, idmap, notes=notes, outcomes=outcomes)
                # (raises inside the block: nothing is written). Only a NIfTI-gz is scanned
                # completely from its head; any other streamed output is left to the check.
                complete = refuse_leaking_output(w.dst, tap.head, ids, voxels_unchanged=nifti_gz)
            etag = tap.etag if complete and nifti_gz else None
            return (outcomes[0] if outcomes else "rewritten"), etag
    raise AssertionError("unreachable")


def _trusted(
    store: ObjectStoreResource,
    head: bytes,
    size: int,
    src_url: str,
    dst_url: str,
    meta: dict[str, str],
    w: Write,
    idmap: IdentityMap,
    ids: Identifiers,
) -> tuple[str, str | None] | None:
    """The trusted paths (module docstring), when the head says the NIfTI prefix needs no change
    and the last 8 bytes prove one member of the declared size: a server-side copy, or a
    minimal gzip header before the source's deflate stream and trailer. Returns the outcome and
    the ETag the scan is recorded under, ``None`` when the file takes the verified paths."""
    probe = probe_deidentified(head, idmap)
    if probe is None or probe.mode not in (IDENTICAL, COPIED) or w.etag is None:
        return None
    trailer = read_range(store, src_url, size - 8, size, if_match=w.etag)
    if not trailer_proves_one_member(probe, trailer):
        return None  # truncated, padded or several members: read in full, which says why
    new_head = probe.minimal_header + head[probe.header_length :]
    complete = refuse_leaking_output(w.dst, new_head, ids, voxels_unchanged=True)
    if probe.mode == IDENTICAL:
        etag = server_copy(store, src_url, dst_url, meta, if_match=w.etag)
        return SERVER_SIDE_COPY, etag if etag and complete else None
    if size <= SMALL:  # one more GET, one PUT
        written = new_head + read_range(store, src_url, len(head), size, if_match=w.etag)
        etag = put_small(store, dst_url, written, meta)
        return COPIED, etag if complete and etag == hashlib.md5(written).hexdigest() else None
    with (
        open_read(store, src_url, size) as src,
        store.open(dst_url, "wb", meta, block_size=STREAM_BLOCK) as raw,
    ):
        tap = OutputTap(raw)
        tap.write(new_head)
        src.seek(len(head))
        shutil.copyfileobj(src, tap, STREAM_BLOCK)
    return COPIED, tap.etag if complete else None


def _copy_if_identical(
    store: ObjectStoreResource,
    head: bytes,
    src: ReadableBinary,
    src_url: str,
    dst_url: str,
    meta: dict[str, str],
    w: Write,
    idmap: IdentityMap,
) -> str | bool | None:
    """The verified check (module docstring): a ``.nii.gz`` whose de-identified bytes are its
    source bytes is copied server-side while this machine reads and inflates it (CRC-32 and
    ISIZE). Returns the copy's ETag (or ``True``) when it was, ``False`` when not, ``None`` when
    ``src`` was read to its end but the file must still be rewritten; a corrupt or truncated
    file, or one whose header or extensions hold an identifier after all, raises.

    The copy lands only after its head (gzip header, NIfTI header and extensions) was scanned
    clean; should the whole file then fail verification, the copy is deleted before this
    raises (and the session's writing marker, up since before any output, keeps the session
    uncommitted until a run succeeds, should this process die in between)."""
    probe = probe_deidentified(head, idmap)
    if probe is None or probe.mode != IDENTICAL or w.etag is None:
        return False
    complete = refuse_leaking_output(w.dst, head, idmap.identifiers(), voxels_unchanged=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        copy = pool.submit(server_copy, store, src_url, dst_url, meta, if_match=w.etag)
        try:
            check = verify_gzip(PrefixedReader(head, src))
        except GzipFormatError as e:  # the message the streaming path would give
            _undo_copy(store, copy, dst_url)
            raise DeidentificationError(f"{w.dst}: {NIFTI_GZ.name}: {e}") from None
        except BaseException:
            _undo_copy(store, copy, dst_url)
            raise
        if not check.single_minimal:
            _undo_copy(store, copy, dst_url)
            return None  # more members or padding: the streaming path rewrites it (read again)
        etag = copy.result()
    return etag if etag and complete else True


def _undo_copy(store: ObjectStoreResource, copy: Future[str | None], dst_url: str) -> None:
    """Wait for a server-side copy whose source failed verification, and delete what it wrote
    (if it failed itself, there is nothing to delete)."""
    if copy.exception() is None:
        store.delete([dst_url])
