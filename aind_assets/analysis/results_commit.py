"""Writing analysis results safely (pure: no Dagster): the job's claim with its heartbeat, and
the upload that puts ``metadata.nd.json`` last, so a results folder without it is incomplete.
Used by :func:`aind_assets.analysis.wrapper.run_job`."""

from __future__ import annotations

import contextlib
import os
import posixpath
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aind_assets.resources.docdb import DocDBResource
    from aind_assets.resources.object_store import ObjectStoreResource

METADATA_FILE = "metadata.nd.json"


def join_url(base: str, *parts: str) -> str:
    parts = tuple(p.strip("/") for p in parts if p and p.strip("/"))
    return posixpath.join(base.rstrip("/"), *parts) if parts else base.rstrip("/")


def claim(
    docdb: DocDBResource,
    collection: str,
    name: str,
    token: str,
    run_id: str | None,
    timeout: float,
    heartbeat_s: float | None = None,
) -> tuple[bool, dict[str, Any] | None]:
    """Take the job's claim; ``(False, holder)`` when another live run holds it."""
    doc = {
        "_id": name,
        "name": name,
        "token": token,
        "run_id": run_id,
        "claimed_at": time.time(),
        "heartbeat_s": heartbeat_s,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    if docdb.insert_unique(collection, doc, key="name"):
        return True, None
    holder = docdb.find_one(collection, {"_id": name})
    if holder is None:  # released in between: try once more
        return docdb.insert_unique(collection, doc, key="name"), None
    beat = holder.get("heartbeat_s")
    allowed = 4 * float(beat) if beat else timeout
    if time.time() - float(holder.get("claimed_at") or 0) > allowed:
        # The holder died: take over. Deleting by its token keeps this race-free too.
        docdb.delete_many(collection, {"_id": name, "token": holder.get("token")})
        return docdb.insert_unique(collection, doc, key="name"), holder
    return False, holder


class Heartbeat:
    """Renews a claim every ``interval`` s until stopped, so only a dead run's claim ages."""

    def __init__(
        self, docdb: DocDBResource, collection: str, name: str, token: str, interval: float
    ):
        self._stop = threading.Event()

        def beat() -> None:
            while not self._stop.wait(interval):
                with contextlib.suppress(Exception):  # DocDB away: the claim just ages
                    docdb.set_fields(
                        collection, {"_id": name, "token": token}, {"claimed_at": time.time()}
                    )

        self._thread = threading.Thread(target=beat, name=f"claim {name[:12]}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def upload_results(
    store: ObjectStoreResource,
    results_dir: Path,
    url: str,
    checkpoint: Callable[[str], None] = lambda step: None,
) -> list[str]:
    """Every file, then ``metadata.nd.json`` last: a folder without it is incomplete."""
    metadata = results_dir / METADATA_FILE
    staged = Path(tempfile.mkdtemp(prefix="aind-metadata-"))
    try:
        held = staged / METADATA_FILE
        metadata.replace(held)
        uploaded = store.put_tree(results_dir, url)
        checkpoint("files_uploaded")
        store.put_file(held, join_url(url, METADATA_FILE))
        held.replace(metadata)
    finally:
        with contextlib.suppress(OSError):
            if (staged / METADATA_FILE).exists():
                (staged / METADATA_FILE).unlink()
            staged.rmdir()
    return [*uploaded, join_url(url, METADATA_FILE)]
