"""h5py over a file object served by a service thread (as fsspec serves S3 reads) must not
deadlock when that thread's allocations trigger a cyclic garbage collection that frees an h5py
object: reads through :class:`GcSafeReader` pause cyclic collection (h5py#2019)."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from pathlib import Path

from aind_assets.analysis.h5safe import GcSafeReader, cyclic_gc_paused

ROOT = Path(__file__).resolve().parents[2]

#: The deadlock, made deterministic: every read is served by a one-thread pool that allocates
#: enough to trigger an automatic collection while the reader holds h5py's lock, and the reader
#: leaves h5py objects in reference cycles between reads (pynwb's containers do the same). With
#: the raw file object this hangs within seconds; through GcSafeReader it completes.
SCENARIO = """
import io, sys
from concurrent.futures import ThreadPoolExecutor
import h5py, numpy as np
from aind_assets.analysis.h5safe import GcSafeReader

buf = io.BytesIO()
with h5py.File(buf, "w") as f:
    for i in range(50):
        f.create_dataset(f"d{i}", data=np.arange(1000) + i)
pool = ThreadPoolExecutor(1)

class ServiceThreadFile(io.RawIOBase):
    def __init__(self, data):
        self._b = io.BytesIO(data)
    def readable(self):
        return True
    def seekable(self):
        return True
    def seek(self, offset, whence=0):
        return self._b.seek(offset, whence)
    def tell(self):
        return self._b.tell()
    def readinto(self, buffer):
        def fetch():
            junk = [[] for _ in range(5000)]  # allocations: an automatic collection runs here
            return self._b.read(len(buffer))
        data = pool.submit(fetch).result()
        memoryview(buffer)[: len(data)] = data
        return len(data)

f = h5py.File(GcSafeReader(ServiceThreadFile(buf.getvalue())), "r")
total = 0
for _ in range(100):
    for i in range(50):
        ds = f[f"d{i}"]
        cycle = {"ds": ds}
        cycle["self"] = cycle  # an h5py object only a cyclic collection frees
        del cycle, ds
        total += int(f[f"d{(i * 7) % 50}"][:10].sum())
f.close()
pool.shutdown()
print(total)
"""


def test_h5py_reads_through_a_service_thread_do_not_deadlock() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = 100 * sum(sum(range(k, k + 10)) for k in ((i * 7) % 50 for i in range(50)))
    assert int(done.stdout) == expected


def test_collection_resumes_after_the_last_of_overlapping_pauses() -> None:
    assert gc.isenabled()
    entered, release = threading.Event(), threading.Event()

    def other_reader() -> None:
        with cyclic_gc_paused():
            entered.set()
            release.wait(60)

    t = threading.Thread(target=other_reader)
    t.start()
    assert entered.wait(60)
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread's read is still in flight
    release.set()
    t.join(60)
    assert gc.isenabled()


def test_reader_returns_the_bytes_and_positions_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with path.open("rb") as raw:
        reader = GcSafeReader(raw)
        assert reader.read(4) == b"\x00\x01\x02\x03"
        reader.seek(250)
        buffer = bytearray(10)
        assert reader.readinto(buffer) == 10 and bytes(buffer) == bytes(
            [250, 251, 252, 253, 254, 255, 0, 1, 2, 3]
        )
        assert reader.tell() == 260


def test_the_runtime_carries_the_same_module() -> None:
    """The analysis runtime installs alone, so it carries a copy; the copy must not drift."""
    platform = ROOT / "aind_assets" / "analysis" / "h5safe.py"
    runtime = ROOT / "runtime" / "aind_assets_runtime" / "h5safe.py"
    assert runtime.read_bytes() == platform.read_bytes()
