"""A small reader (and writer) for MATLAB level-5 MAT-files, enough for the ILSVRC-2012 devkit's meta.mat.

The devkit maps its ILSVRC2012_ID labels (ILSVRC2012_validation_ground_truth.txt) to WordNet ids only
through ``data/meta.mat``. torchvision reads it with scipy; scipy is not a dependency here, and the
format subset meta.mat uses is small: struct arrays of char and double fields, optionally zlib-compressed
(MATLAB's default since v7). Format: MathWorks, "MAT-File Format", level 5. v7.3 files (HDF5) are not
level 5 and are rejected with a message.

The writer exists for the synthetic data generator and the tests (a devkit-like meta.mat without MATLAB).
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any

import numpy as np

# Data types (MAT-File Format, Table 1-1).
_MI_DTYPES = {
    1: "i1",
    2: "u1",
    3: "i2",
    4: "u2",
    5: "i4",
    6: "u4",
    7: "f4",
    9: "f8",
    12: "i8",
    13: "u8",
}
_MI_MATRIX, _MI_COMPRESSED, _MI_UTF8, _MI_UTF16, _MI_UTF32 = 14, 15, 16, 17, 18
# Array classes (Table 1-3).
_MX_CELL, _MX_STRUCT, _MX_OBJECT, _MX_CHAR, _MX_SPARSE = 1, 2, 3, 4, 5
_MX_DTYPES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
_MX_NUMERIC = set(_MX_DTYPES)


class MatFileError(ValueError):
    """A file that is not a level-5 MAT-file this reader understands."""


def read_mat(path: str | os.PathLike) -> dict[str, Any]:
    """Variables of a level-5 MAT-file: numeric arrays as numpy arrays (MATLAB shape, column-major
    semantics), char arrays as str (one row) or list[str], cells as numpy object arrays, structs as a
    list of dicts in MATLAB's linear (column-major) order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 128:
        raise MatFileError(f"{path}: too short for a MAT-file header ({len(data)} bytes)")
    if data[:10] == b"\x89HDF\r\n\x1a\n"[:10] or data[512:520] == b"\x89HDF\r\n\x1a\n":
        raise MatFileError(f"{path}: a MATLAB v7.3 (HDF5) file; save it with -v7 or use a text synset map")
    endian_mark = data[126:128]
    if endian_mark == b"IM":
        order = "<"
    elif endian_mark == b"MI":
        order = ">"
    else:
        raise MatFileError(f"{path}: not a level-5 MAT-file (no 'IM'/'MI' endian mark at byte 126)")
    out: dict[str, Any] = {}
    pos = 128
    while pos + 8 <= len(data):
        name_value, pos = _read_top_element(data, pos, order, str(path))
        if name_value is not None:
            out[name_value[0]] = name_value[1]
    return out


def _tag(data: bytes, pos: int, order: str) -> tuple[int, int, int, bool]:
    """(type, nbytes, data start, small) of the element whose tag starts at ``pos``."""
    (first,) = struct.unpack_from(order + "I", data, pos)
    if first >> 16:  # small data element: type and size packed in 4 bytes, data in the next 4
        return first & 0xFFFF, first >> 16, pos + 4, True
    mtype, nbytes = struct.unpack_from(order + "II", data, pos)
    return mtype, nbytes, pos + 8, False


def _next_pos(start: int, nbytes: int, small: bool) -> int:
    if small:
        return start + 4
    return start + nbytes + (-nbytes % 8)


def _read_top_element(data: bytes, pos: int, order: str, path: str):
    mtype, nbytes, start, small = _tag(data, pos, order)
    end = _next_pos(start, nbytes, small)
    if mtype == _MI_COMPRESSED:
        inner = zlib.decompress(data[start : start + nbytes])
        return _read_top_element(inner, 0, order, path)[0], start + nbytes
    if mtype != _MI_MATRIX:
        return None, end  # a top-level non-matrix element carries no variable
    return _read_matrix(data[start : start + nbytes], order, path), end


def _read_element(data: bytes, pos: int, order: str) -> tuple[int, bytes, int]:
    mtype, nbytes, start, small = _tag(data, pos, order)
    return mtype, data[start : start + nbytes], _next_pos(start, nbytes, small)


def _numeric(mtype: int, raw: bytes, order: str) -> np.ndarray:
    if mtype not in _MI_DTYPES:
        raise MatFileError(f"unsupported MAT data type {mtype}")
    return np.frombuffer(raw, dtype=order + _MI_DTYPES[mtype])


def _read_matrix(body: bytes, order: str, path: str) -> tuple[str, Any]:
    if not body:  # an empty array inside a cell or struct may be written with no subelements
        return "", np.zeros((0, 0))
    _, flags_raw, pos = _read_element(body, 0, order)
    mclass = struct.unpack_from(order + "I", flags_raw)[0] & 0xFF
    dtype, dims_raw, pos = _read_element(body, pos, order)
    dims = tuple(int(d) for d in _numeric(dtype, dims_raw, order))
    _, name_raw, pos = _read_element(body, pos, order)
    name = name_raw.decode("ascii", errors="replace")
    count = int(np.prod(dims)) if dims else 0

    if mclass in _MX_NUMERIC:
        mtype, raw, pos = _read_element(body, pos, order)
        # Values may be stored in a smaller type than their class (e.g. a double as uint8).
        values = _numeric(mtype, raw, order).astype(_MX_DTYPES[mclass])
        return name, values.reshape(dims, order="F")
    if mclass == _MX_CHAR:
        mtype, raw, pos = _read_element(body, pos, order)
        return name, _chars(mtype, raw, order, dims)
    if mclass == _MX_CELL:
        cells = np.empty(count, dtype=object)
        for i in range(count):
            sub_type, sub, pos = _read_element(body, pos, order)
            cells[i] = _read_matrix(sub, order, path)[1]
        return name, cells.reshape(dims, order="F")
    if mclass == _MX_STRUCT:
        _, len_raw, pos = _read_element(body, pos, order)
        field_len = int(_numeric(5, len_raw, order)[0])
        _, names_raw, pos = _read_element(body, pos, order)
        fields = [
            names_raw[i : i + field_len].split(b"\0", 1)[0].decode("ascii")
            for i in range(0, len(names_raw), field_len)
        ]
        records = []
        for _ in range(count):
            record = {}
            for field in fields:
                _, sub, pos = _read_element(body, pos, order)
                record[field] = _read_matrix(sub, order, path)[1]
            records.append(record)
        return name, records
    kind = {_MX_OBJECT: "object", _MX_SPARSE: "sparse"}.get(mclass, f"class {mclass}")
    raise MatFileError(f"{path}: variable {name!r} is a MATLAB {kind} array, which this reader does not read")


def _chars(mtype: int, raw: bytes, order: str, dims: tuple[int, ...]) -> str | list[str]:
    if mtype == _MI_UTF8 or mtype in (1, 2):
        codes = np.frombuffer(raw, dtype="u1").astype(np.uint32)
    elif mtype in (_MI_UTF16, 4):
        codes = np.frombuffer(raw, dtype=order + "u2").astype(np.uint32)
    elif mtype == _MI_UTF32:
        codes = np.frombuffer(raw, dtype=order + "u4")
    else:
        raise MatFileError(f"unsupported character data type {mtype}")
    if mtype == _MI_UTF8:  # variable-width: only a single row is meaningful
        return raw.decode("utf-8")
    rows = dims[0] if dims else 0
    if rows == 0 or codes.size == 0:
        return ""
    grid = codes.reshape(dims, order="F")
    lines = ["".join(map(chr, row)) for row in grid.reshape(rows, -1)]
    return lines[0] if rows == 1 else lines


# ---------------------------------------------------------------------------------------------------------
# Writer (synthetic devkit and tests): structs of str and float fields, the subset meta.mat uses.


def _element(mtype: int, payload: bytes) -> bytes:
    return struct.pack("<II", mtype, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _matrix(name: str, value: Any) -> bytes:
    name_el = _element(1, name.encode("ascii"))
    if isinstance(value, str):
        codes = np.frombuffer(value.encode("utf-16-le"), dtype="<u2") if value else np.zeros(0, "<u2")
        body = (
            _element(6, struct.pack("<II", _MX_CHAR, 0))
            + _element(5, struct.pack("<ii", 1 if value else 0, len(codes)))
            + name_el
            + _element(4, codes.tobytes())
        )
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        fields = list(value[0])
        field_len = max(len(f) for f in fields) + 1
        names = b"".join(f.encode("ascii").ljust(field_len, b"\0") for f in fields)
        body = (
            _element(6, struct.pack("<II", _MX_STRUCT, 0))
            + _element(5, struct.pack("<ii", len(value), 1))
            + name_el
            + _element(5, struct.pack("<i", field_len))
            + _element(1, names)
            + b"".join(_matrix("", record[f]) for record in value for f in fields)
        )
    else:
        arr = np.atleast_2d(np.asarray(value, dtype="<f8"))
        body = (
            _element(6, struct.pack("<II", 6, 0))  # mxDOUBLE_CLASS
            + _element(5, struct.pack(f"<{arr.ndim}i", *arr.shape))
            + name_el
            + _element(9, arr.tobytes(order="F"))
        )
    return _element(_MI_MATRIX, body)


def write_mat(path: str | os.PathLike, variables: dict[str, Any], compress: bool = True) -> None:
    """Write a level-5 MAT-file; values may be str, numbers/arrays, or a list of dicts (a struct array)."""
    header = b"MATLAB 5.0 MAT-file, written by bn_inception".ljust(116, b" ") + b"\0" * 8
    out = [header + struct.pack("<H", 0x0100) + b"IM"]
    for name, value in variables.items():
        element = _matrix(name, value)
        if compress:  # a compressed element is not padded to 8 bytes (MATLAB and scipy agree)
            packed = zlib.compress(element)
            element = struct.pack("<II", _MI_COMPRESSED, len(packed)) + packed
        out.append(element)
    with open(path, "wb") as f:
        f.write(b"".join(out))
