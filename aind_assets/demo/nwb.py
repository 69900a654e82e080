"""Small, real NWB files for demos and tests (pynwb + HDF5), deterministic given a seed.

A file holds what the example analyses need:

* a units table (when ``n_units > 0``) with ``spike_times`` and ``amplitude``: Poisson-like trains
  with a 2 ms dead time, except every third unit (index 2, 5, ...), which gets ~3 % extra spikes
  0.3-1.2 ms after others — refractory violations an ISI-violation analysis should flag;
* a trials table: ``start_time``, ``stop_time``, ``go_cue_time``, ``response_time`` (NaN when the
  animal did not respond), ``reaction_time`` (response - go cue), ``stimulus_side``, ``choice``
  (``left``/``right``/``none``), ``correct`` and ``rewarded`` (bools).

Files are tens of kilobytes: spike times are rounded to a 30 kHz clock and gzipped, HDF5 metadata
uses the compact ``libver="latest"`` format, and the NWB schema is not cached in the file
(``cache_spec=False``; pynwb reads core types without it).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from pynwb import NWBHDF5IO, NWBFile
from pynwb.file import Subject

__all__ = ["SAMPLING_RATE", "VIOLATION_UNIT_PERIOD", "write_demo_nwb"]

#: Spike times are multiples of 1/SAMPLING_RATE seconds.
SAMPLING_RATE = 30_000.0
#: Units with index % VIOLATION_UNIT_PERIOD == VIOLATION_UNIT_PERIOD - 1 violate the refractory
#: period.
VIOLATION_UNIT_PERIOD = 3
_DEAD_TIME = 0.002
_TRIAL_PERIOD = 3.0


def _spike_train(rng: np.random.Generator, rate: float, duration: float, violate: bool):
    # ISIs: dead time + exponential, a renewal process close to Poisson at these rates.
    n_max = int(rate * duration * 1.5) + 20
    isis = _DEAD_TIME + rng.exponential(1.0 / rate, size=n_max)
    times = np.cumsum(isis) + rng.uniform(0, 0.5)
    times = times[times < duration]
    if violate and times.size:
        n_extra = max(2, int(round(0.03 * times.size)))
        anchors = rng.choice(times, size=min(n_extra, times.size), replace=False)
        extra = anchors + rng.uniform(0.0003, 0.0012, size=anchors.size)
        times = np.concatenate([times, extra[extra < duration]])
    times = np.unique(np.round(np.sort(times) * SAMPLING_RATE) / SAMPLING_RATE)
    return times


def write_demo_nwb(
    path: str | os.PathLike[str],
    *,
    subject_id: str,
    session_start: datetime,
    seed: int,
    n_units: int = 8,
    n_trials: int = 40,
    session_description: str = "AIND demo session (synthetic data)",
) -> Path:
    """Write a demo NWB file to ``path`` (parents created) and return its path.

    The content (values, identifier) is a function of the arguments; ``session_start`` must be
    timezone-aware (a naive one is taken as UTC).
    """
    if n_units < 0 or n_trials < 1:
        raise ValueError("n_units must be >= 0 and n_trials >= 1")
    if session_start.tzinfo is None:
        session_start = session_start.replace(tzinfo=UTC)
    rng = np.random.default_rng(seed)
    identifier = str(uuid.UUID(bytes=rng.bytes(16), version=4))

    nwb = NWBFile(
        session_description=session_description,
        identifier=identifier,
        session_start_time=session_start,
        file_create_date=session_start,
        institution="Allen Institute for Neural Dynamics",
        lab="AIND demo",
        subject=Subject(subject_id=str(subject_id), species="Mus musculus", sex="U", age="P90D"),
    )

    # Trials: a two-alternative choice task.
    skill = rng.uniform(0.6, 0.9)
    start = np.arange(n_trials) * _TRIAL_PERIOD + rng.uniform(0, 0.2, size=n_trials)
    go_cue = start + rng.uniform(0.5, 1.0, size=n_trials)
    responded = rng.random(n_trials) > 0.05
    reaction = np.where(responded, rng.lognormal(np.log(0.35), 0.3, size=n_trials), np.nan)
    response = go_cue + reaction
    side = rng.choice(["left", "right"], size=n_trials)
    correct = responded & (rng.random(n_trials) < skill)
    other = np.where(side == "left", "right", "left")
    choice = np.where(~responded, "none", np.where(correct, side, other))
    rewarded = correct & (rng.random(n_trials) < 0.95)

    nwb.add_trial_column("go_cue_time", "time of the go cue (s)")
    nwb.add_trial_column("response_time", "time of the lick response (s); NaN if none")
    nwb.add_trial_column("reaction_time", "response_time - go_cue_time (s); NaN if none")
    nwb.add_trial_column("stimulus_side", "side of the stimulus: left or right")
    nwb.add_trial_column("choice", "side chosen: left, right or none")
    nwb.add_trial_column("correct", "whether the choice matched the stimulus side")
    nwb.add_trial_column("rewarded", "whether water was delivered")
    for i in range(n_trials):
        nwb.add_trial(
            start_time=float(start[i]),
            stop_time=float(start[i] + _TRIAL_PERIOD - 0.5),
            go_cue_time=float(go_cue[i]),
            response_time=float(response[i]),
            reaction_time=float(reaction[i]),
            stimulus_side=str(side[i]),
            choice=str(choice[i]),
            correct=bool(correct[i]),
            rewarded=bool(rewarded[i]),
        )

    # Units.
    if n_units:
        duration = float(n_trials * _TRIAL_PERIOD)
        nwb.add_unit_column("amplitude", "mean spike amplitude (uV)")
        for unit in range(n_units):
            rate = float(np.clip(rng.lognormal(np.log(2.5), 0.6), 0.5, 10.0))
            violate = unit % VIOLATION_UNIT_PERIOD == VIOLATION_UNIT_PERIOD - 1
            nwb.add_unit(
                spike_times=_spike_train(rng, rate, duration, violate),
                amplitude=float(rng.uniform(40.0, 250.0)),
            )

        nwb.units.spike_times.set_data_io(H5DataIO, {"compression": "gzip", "shuffle": True})

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # libver="latest" stores HDF5 metadata compactly (about half the size of a small file).
    with h5py.File(path, "w", libver="latest") as h5, NWBHDF5IO(mode="w", file=h5) as io:
        io.write(nwb, cache_spec=False)
    return path
