"""Release specs on the object store (no Dagster): where they live, reading, listing and writing
them, and the releases already staged completely.
"""

from __future__ import annotations

from aind_assets.hbcd.release.errors import ReleaseAlreadyCompleteError
from aind_assets.hbcd.release.plan import MARKER
from aind_assets.hbcd.release.spec import (
    ReleaseSpec,
    load_release_spec,
    validate_release_id,
)
from aind_assets.hbcd.release.staging import read_marker
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url

# --- release specs and complete releases ------------------------------------------------------
SPEC_SUFFIX = ".yaml"


def spec_url(specs_root: str, release: str) -> str:
    return join_url(specs_root, validate_release_id(release) + SPEC_SUFFIX)


def read_spec(store: ObjectStoreResource, specs_root: str, release: str) -> ReleaseSpec:
    """The registered spec of ``release``; errors name the spec's URL."""
    url = spec_url(specs_root, release)
    if not store.exists(url):
        raise FileNotFoundError(
            f"release {release} has no registered spec at {url}: register it with "
            "`aind-assets release register SPEC.yaml`"
        )
    spec = load_release_spec(store.get_bytes(url), url)
    if spec.release != release:
        raise ValueError(f"{url}: declares release {spec.release!r}, not {release!r}")
    return spec


def list_specs(
    store: ObjectStoreResource, specs_root: str
) -> tuple[dict[str, ReleaseSpec], dict[str, str]]:
    """Registered specs by release, and the errors of the invalid ones (by URL)."""
    specs: dict[str, ReleaseSpec] = {}
    errors: dict[str, str] = {}
    for info in store.list_objects(specs_root):
        if not info.url.endswith(SPEC_SUFFIX):
            continue
        name = info.url.rsplit("/", 1)[-1][: -len(SPEC_SUFFIX)]
        try:
            spec = load_release_spec(store.get_bytes(info.url), info.url)
            if spec.release != name:
                raise ValueError(f"{info.url}: declares release {spec.release!r}, not {name!r}")
        except ValueError as e:
            errors[info.url] = str(e)
            continue
        specs[name] = spec
    return specs, errors


def write_spec(
    store: ObjectStoreResource,
    specs_root: str,
    staging_root: str,
    spec: ReleaseSpec,
    *,
    force: bool = False,
) -> str:
    """Register ``spec`` (as YAML under ``specs_root``). Changing the spec of a complete release
    needs ``force``. Returns the spec's URL."""
    url = spec_url(specs_root, spec.release)
    if store.exists(url) and not force:
        old = load_release_spec(store.get_bytes(url), url)
        if old != spec and read_marker(store, staging_root, spec.release) is not None:
            raise ReleaseAlreadyCompleteError(
                f"release {spec.release} is complete and registered with a different spec; "
                "use a new release identifier (or force)"
            )
    store.put_bytes(url, spec.to_yaml().encode())
    return url


def complete_releases(store: ObjectStoreResource, staging_root: str) -> dict[str, dict]:
    """``{release: marker}`` of every complete release under the staging root."""
    out = {}
    for url in store.glob(join_url(staging_root, "*", MARKER)):
        name = url.rsplit("/", 2)[-2]
        marker = read_marker(store, staging_root, name)
        if marker is not None:
            out[name] = marker
    return out
