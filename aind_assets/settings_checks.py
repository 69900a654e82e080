"""Checks of the platform's environment variables (pure: no Dagster, no I/O).

:func:`check_environment` is called by :meth:`aind_assets.settings.Settings.from_env` before
anything is built, so a bad value fails the code location with one message naming the variable
and what is wrong with it (secrets redacted), instead of a bare ``ValueError`` later, or a local
directory called ``gs:`` made from a URL of an unsupported scheme.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aind_assets.resources.redaction import redact_uri

__all__ = ["LOCATION_VARIABLES", "SettingsError", "check_environment"]


class SettingsError(ValueError):
    """An environment variable holds an unusable value; the message names it."""


#: Variables holding an object-store location: ``s3://bucket[/prefix]`` or a local directory.
LOCATION_VARIABLES = (
    "AIND_STORE_ROOT",
    "AIND_IO_ROOT",
    "AIND_DATA_ASSETS_ROOT",
    "AIND_RESULTS_ROOT",
    "HBCD_IDENTIFIED_ROOT",
    "HBCD_DEIDENTIFIED_ROOT",
    "HBCD_STAGING_ROOT",
    "HBCD_IDENTITY_MAP",
)
#: Variables that may be relative local paths (resolved from the working directory at once).
_RELATIVE_OK = frozenset({"AIND_STORE_ROOT"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/")
#: S3 bucket names (the AWS rules, loosely: 3-63 of lowercase letters, digits, '.', '-').
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DB_NAME_BAD = re.compile(r'[/\\. "$\x00]')


def _value(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value not in (None, "") else None


def _check_location(name: str, value: str) -> None:
    if value != value.strip():
        raise SettingsError(f"{name}={value!r}: leading or trailing spaces")
    m = _SCHEME.match(value)
    if m and m.group(1).lower() != "s3":
        raise SettingsError(
            f"{name}={value!r}: unsupported scheme {m.group(1)!r}; use s3://bucket/prefix or a "
            "local directory"
        )
    if m:
        if not value.startswith("s3://"):
            raise SettingsError(f"{name}={value!r}: an S3 location is written s3://bucket/prefix")
        bucket = value[len("s3://") :].split("/", 1)[0]
        if not _BUCKET.match(bucket):
            raise SettingsError(
                f"{name}={value!r}: {bucket!r} is not an S3 bucket name (3-63 lowercase letters, "
                "digits, '.' or '-'); write s3://bucket/prefix"
            )
        return
    if name not in _RELATIVE_OK and not value.startswith("/"):
        raise SettingsError(
            f"{name}={value!r}: a local location must be an absolute path (a relative one "
            "depends on the working directory of each process), or use s3://bucket/prefix"
        )


def check_environment(env: Mapping[str, str]) -> None:
    """Raise :class:`SettingsError` for the first unusable value among the platform's variables."""
    port = _value(env, "AIND_EMBEDDED_DOCDB_PORT")
    if port is not None:
        try:
            number = int(port)
        except ValueError:
            raise SettingsError(
                f"AIND_EMBEDDED_DOCDB_PORT={port!r} is not a port number (an integer 1-65535)"
            ) from None
        if not 1 <= number <= 65535:
            raise SettingsError(f"AIND_EMBEDDED_DOCDB_PORT={port!r} is outside 1-65535")
    for name in ("AIND_NUM_PARALLEL_WORKERS", "AIND_RUN_BATCH_SIZE", "HBCD_RUN_BATCH_SIZE"):
        count = _value(env, name)
        if count is not None and not (count.isdigit() and int(count) >= 1):
            raise SettingsError(f"{name}={count!r} is not a positive integer")
    uri = _value(env, "AIND_DOCDB_URI")
    if uri is not None and not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise SettingsError(
            f"AIND_DOCDB_URI={redact_uri(uri)!r}: a DocDB URI starts with mongodb:// or "
            "mongodb+srv://"
        )
    database = _value(env, "AIND_DOCDB_DATABASE")
    if database is not None and (_DB_NAME_BAD.search(database) or len(database) > 63):
        raise SettingsError(
            f"AIND_DOCDB_DATABASE={database!r}: a database name has at most 63 characters and "
            'none of / \\ . space " $'
        )
    endpoint = _value(env, "AIND_S3_ENDPOINT_URL")
    if endpoint is not None and not re.match(r"^https?://[^/\s]+", endpoint):
        raise SettingsError(
            f"AIND_S3_ENDPOINT_URL={endpoint!r}: an endpoint is an http:// or https:// URL "
            "(e.g. http://127.0.0.1:8333)"
        )
    for name in LOCATION_VARIABLES:
        value = _value(env, name)
        if value is not None:
            _check_location(name, value)
