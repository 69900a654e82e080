"""EEGLAB ``.set``/``.fdt`` de-identification on files written by the field's writers (MNE's
EEGLAB export, i.e. ``eeglabio``, MATLAB v5 with the data embedded and v7.3), with identifiers
planted in every header field that can hold one (EEGLAB's ``subject``, ``setname``,
``filename``, ``filepath``, ``datfile``, ``comments``, ``history``, ``group``, ``session``,
``condition``, ``etc``, channel labels, event types): the strings are rewritten, the numbers
are bit-identical, MNE reads the result, and the leak scanner sees the same fields."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import mne
import numpy as np
import pytest
import scipy.io

from aind_assets.hbcd.formats.dispatch import (
    deidentify_bytes,
    deidentify_tree,
    handler_for,
    reidentify_bytes,
)
from aind_assets.hbcd.identity.idmap import IdentityMap, IdentityRow
from aind_assets.hbcd.leaks.scan import scan_for_identifiers

EEG_DIR = "sub-{d}/ses-V02/eeg"
STEM = "sub-{d}_ses-V02_task-rest_eeg"


def _raw(row: IdentityRow) -> mne.io.RawArray:
    info = mne.create_info([f"Fz-{row.site}", "Cz", "Pz"], 250.0, "eeg")
    data = np.random.default_rng(2).normal(0, 1e-5, (3, 500))
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_annotations(
        mne.Annotations([0.2, 1.0], [0, 0], [f"stim {row.dccid}", f"{row.pscid} eyes"])
    )
    return raw


def _export(row: IdentityRow, folder: Path, fmt: str = "eeglab") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (STEM.format(d=row.dccid) + ".set")
    mne.export.export_raw(path, _raw(row), fmt=fmt, verbose=False)
    return path


def _load(data: bytes) -> dict[str, Any]:
    return scipy.io.loadmat(io.BytesIO(data), mat_dtype=True)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype and shape, the same bytes (NaN payloads and -0.0 included)."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    )


def test_mne_export_embedded_data_strings_rewritten_data_bit_exact(
    idmap: IdentityMap, row: IdentityRow, tmp_path: Path
) -> None:
    path = _export(row, tmp_path / "in")
    rel = f"{EEG_DIR.format(d=row.dccid)}/{path.name}"
    src = path.read_bytes()
    assert handler_for(rel) is not None
    locations = {f.location for f in scan_for_identifiers(rel, src, idmap)}
    assert {"path", "mat:setname", "mat:chanlocs.labels", "mat:event.type"} <= locations

    new_rel, out = deidentify_bytes(rel, src, idmap)
    assert row.rc_id in new_rel
    assert scan_for_identifiers(new_rel, out, idmap) == []
    assert out[:116] == src[:116]  # header text (creation date) kept: deterministic
    assert deidentify_bytes(rel, src, idmap)[1] == out

    before, after = _load(src), _load(out)
    assert after["data"].dtype == np.float32
    assert np.array_equal(before["data"], after["data"])  # on the raw dtype (float32)
    assert _same_bits(before["data"], after["data"])  # and byte for byte
    for key in ("srate", "nbchan", "pnts", "xmin", "xmax"):
        assert _same_bits(before[key], after[key])
    assert [str(e) for e in after["setname"]] == [STEM.format(d=row.rc_id)]

    target = tmp_path / "out" / new_rel.rsplit("/", 1)[-1]
    target.parent.mkdir()
    target.write_bytes(out)
    back = mne.io.read_raw_eeglab(target, preload=True, verbose=False)
    orig = mne.io.read_raw_eeglab(path, preload=True, verbose=False)
    assert np.array_equal(back.get_data(), orig.get_data())
    assert back.ch_names == [f"Fz-{row.anon_site}", "Cz", "Pz"]
    assert list(back.annotations.description) == [f"stim {row.rc_id}", f"{row.rc_id} eyes"]

    _, again = reidentify_bytes(new_rel, out, idmap)
    assert [str(e) for e in _load(again)["setname"]] == [STEM.format(d=row.dccid)]


def _plant_two_files(row: IdentityRow, path: Path) -> tuple[Path, Path]:
    """The EEGLAB two-file layout (``EEG`` struct in the ``.set``, float32 samples in the
    ``.fdt``, compressed container as MATLAB -v7 writes it), built from MNE's export, with an
    identifier in every header string EEGLAB has."""
    m = scipy.io.loadmat(path, mat_dtype=True)
    data = m["data"]
    fdt = path.with_suffix(".fdt")
    fdt.write_bytes(np.asarray(data, dtype="<f4").T.tobytes())  # EEGLAB: column-major
    d, p, s = row.dccid, row.pscid, row.site
    eeg: dict[str, Any] = {k: v for k, v in m.items() if not k.startswith("__") and k != "data"}
    eeg.update(
        data=fdt.name,
        datfile=fdt.name,
        filename=path.name,
        filepath=f"/data/{s}/{p}/sub-{d}/ses-V02/eeg",
        subject=p,
        group=s,
        session="V02",
        condition=f"rest {d}",
        comments=np.array([f"Original file: {p}.mff", f"site {s}            "]),
        history=f"EEG = pop_loadset('{p}.set');\nEEG.subject = '{d}';",
        etc={"notes": np.array([f"acquired at {s}", "ok"], dtype=object), f"id_{d}": 1.0},
    )
    scipy.io.savemat(path, {"EEG": eeg}, do_compression=True, oned_as="row")
    return path, fdt


def test_eeglab_two_files_every_header_field(
    idmap: IdentityMap, row: IdentityRow, tmp_path: Path
) -> None:
    set_path, fdt_path = _plant_two_files(row, _export(row, tmp_path / "in"))
    folder = EEG_DIR.format(d=row.dccid)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for path in (set_path, fdt_path):
        rel = f"{folder}/{path.name}"
        src = path.read_bytes()
        assert scan_for_identifiers(rel, src, idmap)  # names always; .set strings too
        new_rel, out = deidentify_bytes(rel, src, idmap)
        assert scan_for_identifiers(new_rel, out, idmap) == []
        (out_dir / new_rel.rsplit("/", 1)[-1]).write_bytes(out)
        if path.suffix == ".fdt":
            assert out == src  # samples byte for byte
    found = {f.location for f in scan_for_identifiers(set_path.name, set_path.read_bytes(), idmap)}
    for field in ("subject", "group", "condition", "comments", "history", "filepath"):
        assert f"mat:EEG.{field}" in found
    assert "mat:EEG.etc.notes{}" in found and "mat:EEG.etc.id_<DCCID>(name)" in found

    out_set = next(out_dir.glob("*.set"))
    eeg = scipy.io.loadmat(out_set, simplify_cells=True)["EEG"]
    rc, site = row.rc_id, row.anon_site
    assert eeg["data"] == eeg["datfile"] == STEM.format(d=rc) + ".fdt"
    assert eeg["filename"] == STEM.format(d=rc) + ".set"
    assert eeg["subject"] == rc and eeg["group"] == site and eeg["condition"] == f"rest {rc}"
    assert len(eeg["filepath"]) == 0  # the acquisition machine's folder is cleared
    first = f"Original file: {rc}.mff"  # char matrix rows re-padded to the widest
    assert list(eeg["comments"]) == [first, f"site {site}".ljust(len(first))]
    assert list(eeg["etc"]["notes"]) == [f"acquired at {site}", "ok"]
    assert set(eeg["etc"]) == {"notes", f"id_{rc}"} and eeg["etc"][f"id_{rc}"] == 1.0
    back = mne.io.read_raw_eeglab(out_set, preload=True, verbose=False)
    assert _same_bits(
        back.get_data().astype(np.float32),
        mne.io.read_raw_eeglab(set_path, preload=True, verbose=False).get_data().astype("f4"),
    )
    assert back.ch_names[0] == f"Fz-{site}"


def test_eeglab_v73_refused_and_reported(
    idmap: IdentityMap, row: IdentityRow, tmp_path: Path
) -> None:
    from eeglabio.raw import export_set

    root = tmp_path / "bids"
    folder = root / EEG_DIR.format(d=row.dccid)
    folder.mkdir(parents=True)
    raw = _raw(row)
    export_set(
        str(folder / (STEM.format(d=row.dccid) + ".set")),
        raw.get_data(),
        raw.info["sfreq"],
        raw.ch_names,
        fmt="v7.3",
    )
    report = deidentify_tree(root, tmp_path / "out", idmap)
    assert report.written == []
    [skipped] = report.skipped
    assert skipped.path.endswith(STEM.format(d=row.rc_id) + ".set")
    assert "EEGLAB v7.3 .set not supported yet" in skipped.reason
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.set"))


def test_unreadable_set_is_unscannable_and_refused(idmap: IdentityMap, row: IdentityRow) -> None:
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"setname": f"sub-{row.dccid}"}, do_compression=True)
    broken = buf.getvalue()[:-20]
    rel = "x.set"
    [finding] = scan_for_identifiers(rel, broken, idmap)
    assert finding.kind == "unscannable" and row.dccid not in str(finding)
    with pytest.raises(ValueError, match="MATLAB v5"):
        deidentify_bytes(rel, broken, idmap)


def test_every_matlab_class_keeps_its_values(idmap: IdentityMap, row: IdentityRow) -> None:
    """Complex (scipy drops the imaginary part when it converts to the MATLAB class), logical,
    integer, NaN/Inf, empty struct and cell arrays: same class, same bits."""
    values = {
        "cplx": np.array([[1 + 2j, np.nan - 1j]]),
        "c32": np.array([[1 + 2j]], dtype=np.complex64),
        "logic": np.array([[True, False]]),
        "i16": np.array([[1, -2]], dtype=np.int16),
        "special": np.array([[np.nan, np.inf, -0.0]]),
        "es": np.empty((0, 0), dtype=[("type", object), ("latency", object)]),
        "ec": np.empty((0, 0), dtype=object),
    }
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"EEG": {**values, "subject": row.pscid}}, oned_as="row")
    _, out = deidentify_bytes(f"sub-{row.dccid}_eeg.set", buf.getvalue(), idmap)
    before = scipy.io.loadmat(io.BytesIO(buf.getvalue()))["EEG"][0, 0]
    after = scipy.io.loadmat(io.BytesIO(out))["EEG"][0, 0]
    for name in values:
        a, b = before[name], after[name]
        assert a.shape == b.shape, name
        if a.dtype.names is None and a.dtype != object:
            assert _same_bits(a, b), name
        else:
            assert a.dtype.names == b.dtype.names, name
    assert [str(s) for s in after["subject"]] == [row.rc_id]
