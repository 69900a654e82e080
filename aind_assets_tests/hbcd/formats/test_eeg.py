"""EEG de-identification on files written by the field's own writers (edfio for EDF+/BDF+,
MNE + pybv for BrainVision), with identifiers planted in every header field that can hold one:
only those fields change, every other byte is copied as it is, and the leak scanner sees the
same fields."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import edfio
import mne
import numpy as np
import pytest

from aind_assets.hbcd.formats.base import DeidentificationError
from aind_assets.hbcd.formats.dispatch import deidentify_bytes, handler_for, reidentify_bytes
from aind_assets.hbcd.formats.eeg import annotation_spans, read_edf_header
from aind_assets.hbcd.identity.idmap import IdentityMap, IdentityRow
from aind_assets.hbcd.leaks.scan import scan_for_identifiers

SES = "sub-{d}/ses-V02/eeg/sub-{d}_ses-V02_task-rest_eeg"


def _edf_bytes(row: IdentityRow, *, bdf: bool) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(0)
    data = rng.normal(0, 50, (2, 512))
    sig = edfio.BdfSignal if bdf else edfio.EdfSignal
    kw = {"digital_range": (-8388608, 8388607)} if bdf else {}
    signals = [
        sig(
            data[0],
            256,
            label=f"Fz {row.site}",
            transducer_type=f"AgCl {row.dccid}",
            physical_dimension="uV",
            physical_range=(-500, 500),
            prefiltering=f"HP:0.1Hz {row.pscid}",
            **kw,
        ),
        sig(data[1], 256, label="Cz", physical_dimension="uV", physical_range=(-500, 500), **kw),
    ]
    cls = edfio.Bdf if bdf else edfio.Edf
    rec = cls(
        signals,
        patient=edfio.Patient(
            code=row.pscid,
            sex="F",
            birthdate=dt.date(2023, 4, 12),
            name="Doe_Jane",
            additional=[row.dccid],
        ),
        recording=edfio.Recording(
            startdate=dt.date(2024, 3, 1),
            hospital_administration_code=row.dccid,
            investigator_technician_code="Smith",
            equipment_code=row.site,
            additional=[row.pscid],
        ),
        starttime=dt.time(10, 10, 10),
        annotations=[
            edfio.EdfAnnotation(0.5, None, f"stim {row.dccid}"),
            edfio.EdfAnnotation(1.0, 0.2, f"{row.pscid}_{row.dccid} eyes closed"),
        ],
    )
    buf = io.BytesIO()
    rec.write(buf)
    return buf.getvalue(), data


@pytest.mark.parametrize("bdf", [False, True], ids=["edf", "bdf"])
def test_edf_bdf_identifier_fields_rewritten_rest_byte_exact(
    idmap: IdentityMap, row: IdentityRow, bdf: bool
) -> None:
    raw, data = _edf_bytes(row, bdf=bdf)
    ext = ".bdf" if bdf else ".edf"
    rel = SES.format(d=row.dccid) + ext
    before = scan_for_identifiers(rel, raw, idmap)
    kinds = {f.location.split("[")[0] for f in before}
    assert {"path", "edf.header", "edf.annotations"} <= kinds
    assert handler_for(rel) is not None

    new_rel, out = deidentify_bytes(rel, raw, idmap)
    assert row.rc_id in new_rel and len(out) == len(raw)
    assert scan_for_identifiers(new_rel, out, idmap) == []
    assert b"Jane" not in out and b"Smith" not in out and b"12-APR-2023" not in out

    h_in = read_edf_header(io.BytesIO(raw))
    h_out = read_edf_header(io.BytesIO(out))
    # header: only the identifier fields differ
    assert out[:8] == raw[:8] and out[168:256] == raw[168:256]
    assert out[8:88].decode().split() == [row.rc_id, "F", "X", "X"]
    rec_id = out[88:168].decode().split()
    assert rec_id[:2] == ["Startdate", "01-MAR-2024"] and rec_id[2] == row.rc_id
    assert rec_id[3] == "X" and rec_id[4] == row.anon_site
    for name in ("dimension", "physical_min", "digital_max", "samples"):
        off, width = h_in.field(name, 0)
        assert out[off : off + h_in.ns * width] == raw[off : off + h_in.ns * width]
    # data records: every byte equal outside the annotation signal
    spans = annotation_spans(h_in)
    n = len(h_in.raw)
    for start in range(n, len(raw), h_in.record_bytes):
        rec_in, rec_out = (
            raw[start : start + h_in.record_bytes],
            out[start : start + h_in.record_bytes],
        )
        off, size = spans[0]
        assert rec_in[:off] == rec_out[:off] and rec_in[off + size :] == rec_out[off + size :]
    assert h_out.samples == h_in.samples

    # the field's reader reads it back: same samples, translated annotations and patient code
    reader = edfio.read_bdf if bdf else edfio.read_edf
    back = reader(io.BytesIO(out))
    assert np.allclose(back.signals[0].data, reader(io.BytesIO(raw)).signals[0].data)
    assert back.patient.code == row.rc_id
    # an annotation fits its slot once translated, or (the longer release-candidate ID no
    # longer fits the writer's slot) keeps its onset and duration with its text cleared
    got = [(a.onset, a.duration, a.text) for a in back.annotations]
    assert got[0] == (0.5, None, f"stim {row.rc_id}")
    assert got[1:] in ([(1.0, 0.2, "")], [(1.0, 0.2, f"{row.rc_id} eyes closed")])
    # re-identification brings the DCCID back in the annotations
    _, again = reidentify_bytes(new_rel, out, idmap)
    assert f"stim {row.dccid}".encode() in again


def test_brainvision_header_marker_and_samples(
    idmap: IdentityMap, row: IdentityRow, tmp_path: Path
) -> None:
    info = mne.create_info([f"Fz-{row.site}", "Cz", "Pz"], 250.0, "eeg")
    raw = mne.io.RawArray(np.random.default_rng(1).normal(0, 1e-5, (3, 500)), info, verbose=False)
    raw.set_annotations(mne.Annotations([0.2, 1.0], [0, 0], [f"stim {row.dccid}", row.pscid]))
    stem = SES.format(d=row.dccid).rsplit("/", 1)[-1]
    vhdr = tmp_path / f"{stem}.vhdr"
    mne.export.export_raw(vhdr, raw, fmt="brainvision", verbose=False)
    files = {p.suffix: p for p in tmp_path.iterdir()}
    assert set(files) == {".vhdr", ".vmrk", ".eeg"}
    out_dir = tmp_path / "out"
    prefix = SES.format(d=row.dccid).rsplit("/", 1)[0]
    for suffix, p in files.items():
        rel = f"{prefix}/{p.name}"
        src = p.read_bytes()
        assert handler_for(rel) is not None
        new_rel, out = deidentify_bytes(rel, src, idmap)
        assert scan_for_identifiers(new_rel, out, idmap) == []
        target = out_dir / new_rel.rsplit("/", 1)[-1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(out)
        if suffix == ".eeg":
            assert out == src  # samples byte for byte
        else:
            assert scan_for_identifiers(rel, src, idmap)  # the scanner saw the planted ones
    # MNE reads the de-identified set: DataFile/MarkerFile point at the renamed files
    vhdr_out = next(out_dir.glob("*.vhdr"))
    back = mne.io.read_raw_brainvision(vhdr_out, verbose=False)
    assert np.allclose(back.get_data(), raw.get_data(), atol=1e-7)
    assert f"Comment/stim {row.rc_id}" in list(back.annotations.description)
    assert back.ch_names[0] == f"Fz-{row.anon_site}"


def test_raw_samples_that_look_like_text_are_refused(idmap: IdentityMap, row: IdentityRow) -> None:
    rel = SES.format(d=row.dccid) + ".eeg"
    with pytest.raises(DeidentificationError, match="looks like text"):
        deidentify_bytes(rel, f"name: {row.pscid}\n".encode() * 100, idmap)


def test_motion_tsv_and_json(idmap: IdentityMap, row: IdentityRow) -> None:
    """Wearable motion data (``motion/`` TSV + JSON): samples kept as they are (numbers equal to
    an identifier too: TSV data columns are not identifier positions), names and sidecar
    identifiers replaced."""
    stem = f"sub-{row.dccid}/ses-V02/motion/sub-{row.dccid}_ses-V02_task-play_tracksys-ankle"
    data = f"0.01\t-9.81\t{row.dccid}\n0.02\t-9.80\t0.5\n".encode()
    new_rel, out = deidentify_bytes(f"{stem}_motion.tsv", data, idmap)
    assert out == data and row.rc_id in new_rel
    meta = f'{{"TaskName": "play", "SamplingFrequency": 60, "DeviceSerialNumber": "{row.pscid}"}}'
    _, out_json = deidentify_bytes(f"{stem}_motion.json", meta.encode(), idmap)
    assert row.pscid.encode() not in out_json and row.rc_id.encode() in out_json
    channels = b"name\tcomponent\ttype\ttracked_point\tunits\nacc_x\tx\tACCEL\tankle\tm/s^2\n"
    assert deidentify_bytes(f"{stem}_channels.tsv", channels, idmap)[1] == channels
