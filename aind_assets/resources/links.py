"""Symbolic links in local object stores (pure file-system checks; no Dagster).

A local store is a directory tree; a symbolic link in it may point anywhere on the machine.
Listings never follow a link out of the tree being listed: such a link is *refused*, with a
reason, and its target is never read or copied. A link to a file inside the listed tree is kept
(it reads like the file it points to). S3 has no links.
"""

from __future__ import annotations

import os

__all__ = ["link_refusal", "refused_links_under"]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def link_refusal(path: str, root: str) -> str | None:
    """Why the symbolic link ``path`` (listed under ``root``) must not be followed, or ``None``
    when it is not a link or points to a regular file inside ``root``."""
    if not os.path.islink(path):
        return None
    target = os.path.realpath(path)
    if not os.path.exists(target):
        # the target is not named: it may hold identifiers (HBCD's identified tree)
        return "symbolic link whose target does not exist: refused"
    if not _inside(target, os.path.realpath(root)):
        return "symbolic link pointing outside the listed tree: refused, its target is not read"
    if not os.path.isfile(target):
        return "symbolic link to a directory: refused (links are not followed into folders)"
    return None


def refused_links_under(root: str) -> dict[str, str]:
    """``{path: reason}`` for every refused link below the local directory ``root`` (links to
    folders are not descended into)."""
    out: dict[str, str] = {}
    if not os.path.isdir(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            reason = link_refusal(path, root)
            if reason is not None:
                out[path] = reason
    return dict(sorted(out.items()))
