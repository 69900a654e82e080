"""EEGLAB ``.set`` files (pure): the MATLAB container that holds an EEGLAB dataset's header
(``setname``, ``subject``, ``filename``, ``filepath``, ``datfile``, ``comments``, ``history``,
``group``, ``session``, ``condition``, ``etc``, ``chanlocs``, ``event``...) and, unless the
samples are in a separate ``.fdt`` (copied byte for byte by :mod:`.eeg`), the data array.

MATLAB v5 containers (what EEGLAB, ``eeglabio`` and MNE write; compressed v7 included) are read
with :func:`scipy.io.loadmat` (MATLAB classes kept: ``mat_dtype``, char matrices as they are)
and written back with :func:`scipy.io.savemat`:

* every char array (each row of a char matrix, re-padded with spaces to the new width), every
  top-level variable name and struct field name goes through the token rules, at any depth
  (structs, struct arrays, cells, objects): ``chanlocs`` labels, ``event`` types, ``etc``...;
  a name that is no longer a valid MATLAB name is refused;
* de-identifying clears ``filepath`` (the acquisition machine's folder; readers take the
  folder from where the ``.set`` is opened);
* numeric, logical and sparse arrays (``data`` when embedded, ICA matrices, latencies) are
  written back with their values bit-identical (same MATLAB class);
* the 116-byte header text goes through the token rules (its creation date kept), so the
  output is deterministic.

The container bytes are rewritten (scipy's encoding of the same values: element order, tags,
compression on if the input was compressed); the values are the same. The file is parsed whole
(at most :data:`MAX_SET_BYTES`). MATLAB function handles and opaque objects (``string``,
``table``...) are refused, and so are MATLAB v7.3 (HDF5) ``.set`` files: a string rewritten in
place with h5py leaves its old bytes in the file's freed space, and a clean copy has to remap
MATLAB's object references (cells, struct arrays) into a new file.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

# scipy (io, sparse: ~20 MiB and 0.1 s) is imported where an EEGLAB file is read or written, not
# with the format table: every de-identification process imports this module, few meet a .set.
from aind_assets.hbcd.formats.base import DeidentificationError, FileHandler, FormatContext
from aind_assets.hbcd.formats.text import read_exact_or_less
from aind_assets.hbcd.streams import ReadableBinary, WritableBinary

__all__ = [
    "EEGLAB_SET",
    "MAX_SET_BYTES",
    "EeglabFormatError",
    "is_mat5_prefix",
    "is_mat73_prefix",
    "mat_header_text",
    "read_mat5",
    "rewrite_mat",
]

#: Largest ``.set`` read (MATLAB v5 variables are limited to 2 GiB each).
MAX_SET_BYTES = 4 << 30
_HEADER_TEXT = 116
_MAT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_META_KEYS = ("__header__", "__version__", "__globals__")

#: ``text(value, where) -> new value``; ``where`` names the variable/field path (no values).
TextRule = Callable[[str, str], str]


class EeglabFormatError(DeidentificationError):
    pass


def is_mat5_prefix(prefix: bytes) -> bool:
    """A MATLAB v5 (v6/v7) MAT-file: text header, version 0x0100 in the file's byte order."""
    if len(prefix) < 128 or prefix[126:128] not in (b"IM", b"MI"):
        return False
    order = "<" if prefix[126:128] == b"IM" else ">"
    return bool(struct.unpack(order + "H", prefix[124:126])[0] == 0x0100)


def is_mat73_prefix(prefix: bytes) -> bool:
    """A MATLAB v7.3 MAT-file (HDF5 with a 512-byte user block)."""
    return prefix.startswith(b"MATLAB 7.3 MAT-file") or (
        len(prefix) >= 128
        and prefix[126:128] in (b"IM", b"MI")
        and prefix[124:126] in (b"\x00\x02", b"\x02\x00")
    )


def mat_header_text(prefix: bytes) -> str:
    return prefix[:_HEADER_TEXT].decode("latin-1").rstrip(" \0")


def _compressed(data: bytes) -> bool:
    if len(data) < 136:
        return False
    order = "<" if data[126:128] == b"IM" else ">"
    return bool(struct.unpack(order + "I", data[128:132])[0] == 15)  # miCOMPRESSED


def _loadmat(data: bytes, mat_dtype: bool) -> tuple[dict[str, Any], bool]:
    """The variables, and whether scipy discarded imaginary parts (it does with ``mat_dtype``)."""
    import scipy.io

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        variables = scipy.io.loadmat(
            io.BytesIO(data),
            mat_dtype=mat_dtype,
            squeeze_me=False,
            chars_as_strings=False,
            struct_as_record=True,
            verify_compressed_data_integrity=True,
        )
    return variables, any(issubclass(w.category, np.exceptions.ComplexWarning) for w in caught)


def _with_complex(a: Any, b: Any) -> Any:
    """``a`` (MATLAB classes) with the complex arrays of ``b`` (the same file loaded in its
    storage types), cast to ``a``'s class."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape:
        if a.dtype.names is not None and b.dtype.names == a.dtype.names:
            out = a.copy()
            for idx in np.ndindex(a.shape):
                for name in a.dtype.names:
                    out[idx][name] = _with_complex(a[idx][name], b[idx][name])
            return out
        if a.dtype == object and b.dtype == object:
            out = a.copy()
            for idx in np.ndindex(a.shape):
                out[idx] = _with_complex(a[idx], b[idx])
            return out
        if b.dtype.kind == "c":
            if a.dtype.kind not in "fc":
                raise EeglabFormatError("complex integer MATLAB arrays are not supported")
            return b.astype(np.result_type(a.dtype, np.complex64))
    return a


def read_mat5(data: bytes) -> dict[str, Any]:
    """The variables of a MATLAB v5 file, MATLAB classes and char matrices kept (complex
    arrays too: scipy drops their imaginary parts when it converts to the MATLAB class, so a
    file with any is read a second time in its storage types for them)."""
    try:
        variables, lost = _loadmat(data, mat_dtype=True)
        if lost:
            stored, _ = _loadmat(data, mat_dtype=False)
            variables = {k: _with_complex(v, stored.get(k)) for k, v in variables.items()}
        return variables
    except EeglabFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - scipy's MatReadError, zlib, ValueError...: unreadable
        raise EeglabFormatError(f"unreadable MATLAB v5 container ({type(e).__name__})") from None


def _name(name: str, text: TextRule, where: str) -> str:
    new = text(name, where + "(name)")
    if new != name and not _MAT_NAME.match(new):
        raise EeglabFormatError(f"{where}: a rewritten name is not a valid MATLAB name")
    return new


def _chars(arr: np.ndarray, text: TextRule, where: str) -> np.ndarray:
    """A char matrix (``U1``, rows x columns) through ``text`` row by row, returned as one
    string per row (what :func:`scipy.io.savemat` writes as a char matrix), rows re-padded
    with spaces to the widest."""
    if arr.ndim != 2:
        raise EeglabFormatError(f"{where}: char array with {arr.ndim} dimensions")
    rows = [text("".join(r), where) for r in arr.tolist()]
    width = max((len(r) for r in rows), default=0)
    return np.array([r.ljust(width) for r in rows], dtype=f"U{max(width, 1)}")


def _struct(arr: np.ndarray, text: TextRule, where: str) -> np.ndarray:
    names = arr.dtype.names or ()
    new_names = [_name(n, text, f"{where}.{n}") for n in names]
    out = np.empty(arr.shape, dtype=[(n, object) for n in new_names])
    for idx in np.ndindex(arr.shape):
        for old, new in zip(names, new_names, strict=True):
            out[idx][new] = rewrite_value(arr[idx][old], text, f"{where}.{old}")
    return out


def rewrite_value(value: Any, text: TextRule, where: str) -> Any:
    """``value`` (as :func:`read_mat5` returns it) with every string through ``text``."""
    import scipy.sparse
    from scipy.io.matlab import MatlabFunction, MatlabObject, MatlabOpaque

    if isinstance(value, MatlabFunction | MatlabOpaque):
        raise EeglabFormatError(f"{where}: MATLAB function handles/opaque objects not supported")
    if isinstance(value, MatlabObject):
        out = _struct(value, text, where)
        return MatlabObject(out, text(value.classname, where + "(class)"))
    if scipy.sparse.issparse(value):
        return value
    if not isinstance(value, np.ndarray):
        raise EeglabFormatError(f"{where}: unexpected MATLAB value ({type(value).__name__})")
    if value.dtype.names is not None:
        return _struct(value, text, where)
    if value.dtype.kind == "U":
        return _chars(value, text, where)
    if value.dtype == object:
        cells = np.empty(value.shape, dtype=object)
        for idx in np.ndindex(value.shape):
            cells[idx] = rewrite_value(value[idx], text, f"{where}{{}}")
        return cells
    if value.dtype.kind in "biufc":
        return value  # numbers: untouched
    raise EeglabFormatError(f"{where}: unexpected MATLAB array type ({value.dtype.kind})")


def rewrite_mat(variables: dict[str, Any], text: TextRule) -> dict[str, Any]:
    """Every variable (meta keys left out) with names and strings through ``text``."""
    out: dict[str, Any] = {}
    for key, value in variables.items():
        if key in _META_KEYS:
            continue
        out[_name(key, text, key)] = rewrite_value(value, text, key)
    return out


def _fit_header(text: str, original: bytes) -> bytes:
    """The header text in its 116 bytes, padded as the original was (spaces or NULs)."""
    data = text.encode("latin-1", "replace")[:_HEADER_TEXT]
    used = len(original[:_HEADER_TEXT].rstrip(b" \0"))
    pad = original[used : used + 1] if used < _HEADER_TEXT else b" "
    return data.ljust(_HEADER_TEXT, pad if pad in (b" ", b"\0") else b" ")


def run_eeglab_set(src: ReadableBinary, dst: WritableBinary, ctx: FormatContext) -> None:
    data = read_exact_or_less(src, MAX_SET_BYTES + 1)
    if len(data) > MAX_SET_BYTES:
        raise EeglabFormatError(f"EEGLAB .set larger than {MAX_SET_BYTES >> 30} GiB")
    if is_mat73_prefix(data[:128]):
        raise EeglabFormatError("EEGLAB v7.3 .set not supported yet (MATLAB v7.3/HDF5 container)")
    if not is_mat5_prefix(data[:128]):
        raise EeglabFormatError("not a MATLAB v5 MAT-file (EEGLAB .set)")
    variables = read_mat5(data)

    def text(value: str, where: str) -> str:
        if ctx.deidentify and where.rsplit(".", 1)[-1] == "filepath" and value.strip():
            ctx.notes.append("EEGLAB: filepath cleared")
            return ""
        return ctx.translator.text(value)

    new = rewrite_mat(variables, text)
    import scipy.io

    out = io.BytesIO()
    try:
        scipy.io.savemat(
            out,
            new,
            format="5",
            long_field_names=True,
            do_compression=_compressed(data),
            oned_as="row",
        )
    except (ValueError, TypeError) as e:
        raise EeglabFormatError(f"cannot write the MATLAB container ({type(e).__name__})") from None
    body = out.getvalue()
    header = _fit_header(ctx.translator.text(mat_header_text(data)), data)
    dst.write(header + body[_HEADER_TEXT:])


EEGLAB_SET = FileHandler("eeglab-set", run_eeglab_set)
