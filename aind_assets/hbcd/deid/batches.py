"""Batches of sessions: which sessions share a run, and how a run works through its sessions
(pure: no Dagster, no storage client; the work itself is passed in).

* **Requests.** The discovery sensor and the daily schedule request one run per batch of up to
  ``run_batch_size`` sessions (a range of consecutive registered partition keys:
  :func:`aind_assets.batches.contiguous_batches`). A session whose last attempt did not complete
  (:func:`attempted_and_failed`) gets a run of its own: a session that fails every time would
  otherwise fail every batch it lands in, and hold back the commit of its batch-mates.
* **Runs.** Inside a run, :func:`run_by_subject` works through the sessions on a bounded number of
  threads, the sessions of one subject one after another in the same thread: they share the
  subject-level files (``*_sessions.tsv``), which two threads must not sync at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aind_assets.batches import contiguous_batches
from aind_assets.hbcd.deid.commit import subject_of
from aind_assets.hbcd.deid.discovery import EMPTY_DIGEST, LedgerEntry
from aind_assets.parallel import Done, run_bounded

__all__ = [
    "attempted_and_failed",
    "by_subject",
    "fit_in_queue",
    "request_batches",
    "run_by_subject",
]


def by_subject(keys: Iterable[str]) -> dict[str, list[str]]:
    """Session partition keys grouped by their ``sub-<RC>`` (each group in key order)."""
    groups: dict[str, list[str]] = {}
    for key in sorted(set(keys)):
        groups.setdefault(subject_of(key), []).append(key)
    return groups


def run_by_subject(keys: Sequence[str], work: Callable[[str], Any], workers: int) -> Done[str]:
    """Call ``work(key)`` for every session: subjects concurrently (at most ``workers`` at once),
    the sessions of a subject in order. Every session's value or error is its own: one failing
    session neither stops nor discards the others."""

    def subject(group: list[str]) -> dict[str, tuple[bool, Any]]:
        out: dict[str, tuple[bool, Any]] = {}
        for key in group:
            try:
                out[key] = (True, work(key))
            except Exception as exc:  # noqa: BLE001 - reported with its key by the caller
                out[key] = (False, exc)
        return out

    groups = by_subject(keys)
    done = run_bounded({s: functools.partial(subject, g) for s, g in groups.items()}, workers)
    values: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    for outcome in done.values.values():
        for key, (ok, value) in outcome.items():
            (values if ok else errors)[key] = value
    for sub, exc in done.errors.items():  # only if the loop itself broke
        for key in groups[sub]:
            errors.setdefault(key, exc)
    return Done(values, errors)


def attempted_and_failed(
    writing: Iterable[str], entries: Mapping[str, LedgerEntry], digests: Mapping[str, str]
) -> set[str]:
    """Sessions whose writing marker is present but whose ledger entry does not record the
    current source (``digests``: partition key -> session digest; absent: gone from the source):
    their last run failed, was stopped, or its leak check failed. Batch-mates of a failed session
    have their entry (their own write completed) and are not among them."""
    out = set()
    for unit in writing:
        entry = entries.get(unit)
        if entry is None or entry.session_digest != digests.get(unit, EMPTY_DIGEST):
            out.add(unit)
    return out


def request_batches(
    order: Sequence[str], keys: Iterable[str], size: int, alone: Iterable[str] = ()
) -> list[list[str]]:
    """The sessions ``keys`` cut into runs: batches of at most ``size`` keys consecutive in
    ``order`` (the registration order, this tick's new keys included), then every key of
    ``alone`` as a run of its own. Batches come in ``order``, so cutting the list's tail never
    leaves a gap before a kept batch."""
    solo = set(alone)
    wanted = [k for k in keys if k not in solo]
    batches = contiguous_batches(order, wanted, max(1, size))
    return batches + [[k] for k in sorted(solo & set(keys))]


def fit_in_queue(batches: list[list[str]], room: int) -> tuple[list[list[str]], int]:
    """The first ``room`` batches, and how many sessions the rest holds (deferred to a later
    tick: the ledger still says they are not done)."""
    kept = batches[: max(0, room)]
    return kept, sum(len(b) for b in batches[len(kept) :])
