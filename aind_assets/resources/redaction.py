"""Secrets out of MongoDB URIs, for messages, logs and ``aind-assets settings`` (pure).

The URI is split the way pymongo splits it (``pymongo.uri_parser_shared.parse_uri``): the options
start at the first ``?``, the database at the first ``/`` before them, and the credentials end at
the last ``@`` of the host part. A password holding an unescaped ``/``, ``?`` or ``#`` makes that
split land in the wrong place (pymongo then rejects the URI, or reads the password as a host and
port), so the credentials are taken, more widely, as everything between ``://`` and the **last**
``@`` of the URI: whatever pymongo decides, that covers its user-info. Options whose name suggests
a secret (password, token, secret, key, credential...) have their value redacted, and inside
``authMechanismProperties`` every ``NAME:value`` pair whose name does (``AWS_SESSION_TOKEN``).

Over-redaction is accepted (an ``@`` inside an option value hides the host as well); a secret in
the output is not.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = ["MASK", "redact_uri", "scrub_secrets", "uri_secrets"]

MASK = "***"

_SECRET_NAME = re.compile(
    r"pass(word|wd)?|pwd|token|secret|key|credential|signature|session", re.IGNORECASE
)
#: An option inside the query string: (separator)(name)=(value up to the next & or ;).
_OPTION = re.compile(r"(?P<sep>^|[?&;])(?P<name>[^=&;?]*)=(?P<value>[^&;]*)")
_DELIMS = re.compile(r"[/?#@:&;,]")


def _is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(unquote_plus(name)))


def _split(uri: str) -> tuple[str, str | None, str]:
    """``(scheme + "://", user-info or None, rest after the user-info's "@")``."""
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        prefix = scheme + "://"
    else:
        prefix, rest = "", uri
    if "@" not in rest:
        return prefix, None, rest
    userinfo, _, after = rest.rpartition("@")
    return prefix, userinfo, after


def _redact_mechanism_properties(value: str) -> str:
    pairs = []
    for pair in value.split(","):
        name, sep, val = pair.partition(":")
        pairs.append(f"{name}{sep}{MASK}" if sep and _is_secret_name(name) else pair)
    return ",".join(pairs)


def _redact_options(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        name, value = m["name"], m["value"]
        if unquote_plus(name).lower() == "authmechanismproperties":
            value = _redact_mechanism_properties(unquote_plus(value))
        elif _is_secret_name(name):
            value = MASK
        return f"{m['sep']}{name}={value}"

    return _OPTION.sub(one, text)


def redact_uri(uri: str) -> str:
    """``mongodb://user:pw@host/db?authMechanismProperties=AWS_SESSION_TOKEN:t`` →
    ``mongodb://user:***@host/db?authMechanismProperties=AWS_SESSION_TOKEN:***``.

    Holds for any URI pymongo accepts and for malformed ones (see the module docstring)."""
    prefix, userinfo, rest = _split(str(uri))
    if userinfo is None:
        shown_user = ""
    else:
        user, colon, _ = userinfo.partition(":")
        clean_user = bool(user) and not _DELIMS.search(user)
        if colon and clean_user:
            shown_user = f"{user}:{MASK}@"
        elif not colon and clean_user and "?" not in userinfo:
            shown_user = f"{user}@"  # a user without a password (X.509, GSSAPI)
        else:
            shown_user = f"{MASK}@"
    return prefix + shown_user + _redact_options(rest)


def uri_secrets(uri: str) -> tuple[list[str], list[str]]:
    """The secrets of ``uri`` as ``(whole, pieces)``, each longest first and also unquoted:
    ``whole`` are the password (wide split, see the module docstring) and the values of secret
    options; ``pieces`` are the parts of the password between delimiters, so that a driver
    message quoting part of a mis-split password can be scrubbed too."""
    _, userinfo, rest = _split(str(uri))
    whole: set[str] = set()
    pieces: set[str] = set()
    if userinfo is not None:
        _, colon, password = userinfo.partition(":")
        secret = password if colon else userinfo
        whole.add(secret)
        pieces.update(_DELIMS.split(secret))
    for m in _OPTION.finditer(rest):
        name, value = m["name"], m["value"]
        if unquote_plus(name).lower() == "authmechanismproperties":
            for pair in unquote_plus(value).split(","):
                key, sep, val = pair.partition(":")
                if sep and _is_secret_name(key):
                    whole.add(val)
        elif _is_secret_name(name):
            whole.add(value)

    def variants(values: set[str]) -> list[str]:
        out = {v for s in values for v in (s, unquote_plus(s)) if v}
        return sorted(out, key=lambda s: (-len(s), s))

    return variants(whole), variants(pieces - whole)


def scrub_secrets(message: str, uri: str) -> str:
    """``message`` with every secret of ``uri`` replaced by ``***`` (pieces of a password only
    where they stand as a word of their own, so that a short piece does not eat other words)."""
    whole, pieces = uri_secrets(uri)
    for secret in whole:
        message = message.replace(secret, MASK)
    for piece in pieces:
        message = re.sub(rf"(?<![A-Za-z0-9]){re.escape(piece)}(?![A-Za-z0-9])", MASK, message)
    return message
