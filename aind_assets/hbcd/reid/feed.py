"""Writing and reading the LORIS change feed on the identified side (no Dagster); the manifest
itself is built by :mod:`aind_assets.hbcd.reid.changes`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import reidentify_path
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.reid.changes import build_change_manifest
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url

__all__ = ["change_feed_root", "read_latest_changes", "write_change_feed"]


def change_feed_root(layout: HbcdLayout) -> str:
    """``HBCD_IDENTIFIED_ROOT/.aind-assets/reidentified/changes``."""
    return join_url(layout.reid_ledger.rsplit("/", 1)[0], "changes")


def write_change_feed(
    store: ObjectStoreResource,
    layout: HbcdLayout,
    idmap: IdentityMap,
    *,
    removed: Iterable[str],
    replaced: Iterable[str],
    added: Iterable[str],
) -> dict[str, Any]:
    """Write ``changes/<timestamp>.json`` and ``changes/latest.json`` (``removed``: identified
    paths; ``replaced``/``added``: de-identified paths, re-identified here). Returns the
    manifest (it holds DCCIDs: keep it on the identified side)."""
    now = datetime.now(UTC)
    manifest = build_change_manifest(
        removed,
        [reidentify_path(r, idmap) for r in replaced],
        [reidentify_path(r, idmap) for r in added],
        written_at=now.isoformat(),
    )
    body = json.dumps(manifest, indent=1).encode()
    root = change_feed_root(layout)
    store.put_bytes(join_url(root, now.strftime("%Y%m%dT%H%M%S%fZ") + ".json"), body)
    store.put_bytes(join_url(root, "latest.json"), body)
    return manifest


def read_latest_changes(store: ObjectStoreResource, layout: HbcdLayout) -> dict[str, Any] | None:
    try:
        data = json.loads(store.get_bytes(join_url(change_feed_root(layout), "latest.json")))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None
