"""Symbolic links in the identified tree (local stores; S3 has none): links pointing outside
the listed tree, dangling or to a folder are refused, never followed (no Dagster)."""

from __future__ import annotations

import os

from aind_assets.hbcd.copies import hidden_path_token
from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import UnmappedIdentifierError, deidentify_path
from aind_assets.hbcd.identity.scrub import Scrubber
from aind_assets.resources.links import link_refusal


def top_level_links(root: str) -> dict[str, str]:
    """Refused links directly in the local ``root`` (dataset-level files); ``{}`` on S3."""
    if root.startswith("s3://"):
        return {}
    path = os.path.abspath(root)
    if not os.path.isdir(path):
        return {}
    found = {os.path.join(path, entry): entry for entry in sorted(os.listdir(path))}
    return {
        full: reason
        for full, entry in found.items()
        if not entry.startswith("sub-") and (reason := link_refusal(full, path)) is not None
    }


def in_run(rel_to_subject: str, ses: str) -> bool:
    """``rel_to_subject`` (below ``sub-<id>/``) belongs to the run of session ``ses``."""
    first = rel_to_subject.split("/", 1)[0]
    return first == f"ses-{ses}" or not first.startswith("ses-")


def refused_links(refused: dict[str, str], src_root: str, idmap: IdentityMap) -> dict[str, str]:
    """Symbolic links that listings left out (pointing outside the tree, dangling, to a folder;
    ``{url: reason}``) as failures of the run (``{de-identified path: reason}``): the target is
    never read, and the caller deletes a copy made before the link appeared."""
    scrub = Scrubber(idmap)
    failed: dict[str, str] = {}
    base = src_root.rstrip("/") + "/"
    for url, reason in refused.items():
        rel = url[len(base) :] if url.startswith(base) else url.rsplit("/", 1)[-1]
        try:
            shown = deidentify_path(rel, idmap)
        except UnmappedIdentifierError:
            shown = hidden_path_token(rel)
        failed[shown] = scrub(reason)
    return failed
