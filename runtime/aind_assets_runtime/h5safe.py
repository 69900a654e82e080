"""File objects h5py can read over fsspec without deadlocking (pure: no Dagster). A byte-identical
copy is in the analysis runtime (runtime/aind_assets_runtime/h5safe.py), which installs alone.

h5py holds its global lock while it calls a Python file object's ``read``; an fsspec S3 file
fetches on fsspec's service thread and waits for it. If that thread starts a cyclic garbage
collection that frees an h5py object (pynwb/hdmf containers are full of reference cycles), the
collector needs the lock the reading thread holds: both wait forever (h5py#2019; seen here as an
S3 range read hung until the test timeout on a loaded machine). Cyclic collection is therefore
paused while any such read is in flight, and resumes as soon as none is.
"""

from __future__ import annotations

import gc
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

_lock = threading.Lock()
_in_flight = 0
_was_enabled = True


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause cyclic garbage collection (process-wide) for the duration; nestable and safe
    across threads: collection resumes when the last pause ends, if it was enabled before."""
    global _in_flight, _was_enabled
    with _lock:
        if _in_flight == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _in_flight += 1
    try:
        yield
    finally:
        with _lock:
            _in_flight -= 1
            if _in_flight == 0 and _was_enabled:
                gc.enable()


class GcSafeReader(io.RawIOBase):
    """A read-only, seekable view of ``raw`` whose reads run with cyclic GC paused."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - any writable buffer
        with cyclic_gc_paused():
            data = self._raw.read(len(buffer))
        n = len(data)
        memoryview(buffer)[:n] = data
        return n

    def read(self, size: int = -1) -> bytes:
        with cyclic_gc_paused():
            return self._raw.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()
