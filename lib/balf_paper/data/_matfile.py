"""Minimal reader for MATLAB level-5 ``.mat`` files (enough for the ImageNet devkit's meta.mat).

SciPy's ``scipy.io.loadmat`` is not a dependency of balf, and torchvision's devkit parser imports
it, so this module reads the subset of the format that ``ILSVRC2012_devkit_t12/data/meta.mat``
uses: zlib-compressed elements, struct and cell arrays, char arrays and numeric arrays, in either
byte order. Sparse, object and function-handle arrays, and v7.3 (HDF5) files, are rejected.

Format reference: MathWorks, "MAT-File Format" (level 5), chapter 1.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

__all__ = ["MatFileError", "read_mat"]

_HEADER_BYTES = 128

# Data types (mi*) → numpy dtype codes (without byte order).
_MI_NUMERIC = {
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
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MI_UTF8, _MI_UTF16, _MI_UTF32 = 16, 17, 18

# Array classes (mx*) → numpy dtype of the values.
_MX_CELL, _MX_STRUCT, _MX_OBJECT, _MX_CHAR, _MX_SPARSE = 1, 2, 3, 4, 5
_MX_NUMERIC = {
    6: np.float64,
    7: np.float32,
    8: np.int8,
    9: np.uint8,
    10: np.int16,
    11: np.uint16,
    12: np.int32,
    13: np.uint32,
    14: np.int64,
    15: np.uint64,
}
_COMPLEX_FLAG = 0x0800


class MatFileError(ValueError):
    """The bytes are not a level-5 MAT file, or use a feature this reader does not support."""


def read_mat(data: bytes) -> dict[str, Any]:
    """Parse a level-5 MAT file held in memory.

    Values are converted as follows: numeric arrays → ``np.ndarray`` with MATLAB's dimensions
    (e.g. a scalar is shape ``(1, 1)``), char arrays → ``str`` (one row) or ``list[str]`` (several
    rows), cell arrays → ``list`` and struct arrays → ``list[dict[str, Any]]``, both flattened in
    MATLAB's column-major order; an empty matrix element → ``None``.

    Args:
        data: the whole file content.

    Returns:
        ``{variable name: value}``.

    Raises:
        MatFileError: if the header is not a level-5 header or an unsupported element is met.

    Example:
        >>> synsets = read_mat(Path("meta.mat").read_bytes())["synsets"]
        >>> synsets[0]["WNID"]
        'n02119789'
    """
    if len(data) < _HEADER_BYTES:
        raise MatFileError("file too short for a MAT header")
    if data[:19] == b"MATLAB 7.3 MAT-file" or data[:4] == b"\x89HDF":
        raise MatFileError("MATLAB v7.3 (HDF5) files are not supported")
    indicator = data[126:128]
    if indicator == b"IM":
        endian = "<"
    elif indicator == b"MI":
        endian = ">"
    else:
        raise MatFileError(f"not a level-5 MAT file (endian indicator {indicator!r})")
    variables: dict[str, Any] = {}
    pos = _HEADER_BYTES
    while pos < len(data):
        mtype, payload, pos = _read_element(data, pos, endian)
        if mtype == _MI_COMPRESSED:
            mtype, payload, _ = _read_element(zlib.decompress(payload), 0, endian)
        if mtype != _MI_MATRIX:
            raise MatFileError(f"unexpected top-level element of type {mtype}")
        name, value = _read_matrix(payload, endian)
        variables[name] = value
    return variables


def _read_element(buf: bytes, pos: int, endian: str) -> tuple[int, bytes, int]:
    """Read one tagged data element at ``pos``; return ``(type, payload, next position)``."""
    if pos + 8 > len(buf):
        raise MatFileError(f"truncated element tag at byte {pos}")
    (first,) = struct.unpack_from(endian + "I", buf, pos)
    if first >> 16:  # small data element: type and size packed in 4 bytes, data in the next 4
        mtype, nbytes = first & 0xFFFF, first >> 16
        return mtype, bytes(buf[pos + 4 : pos + 4 + nbytes]), pos + 8
    (nbytes,) = struct.unpack_from(endian + "I", buf, pos + 4)
    start = pos + 8
    if start + nbytes > len(buf):
        raise MatFileError(f"element at byte {pos} announces {nbytes} bytes past the end")
    padded = nbytes if first == _MI_COMPRESSED else (nbytes + 7) // 8 * 8
    return first, bytes(buf[start : start + nbytes]), start + padded


def _numeric(mtype: int, payload: bytes, endian: str) -> np.ndarray:
    if mtype not in _MI_NUMERIC:
        raise MatFileError(f"expected a numeric element, got type {mtype}")
    return np.frombuffer(payload, dtype=endian + _MI_NUMERIC[mtype])


def _read_matrix(buf: bytes, endian: str) -> tuple[str, Any]:
    """Parse the payload of a miMATRIX element; return ``(array name, value)``."""
    if not buf:
        return "", None
    mtype, payload, pos = _read_element(buf, 0, endian)
    flags = int(_numeric(mtype, payload, endian)[0])
    mx_class, is_complex = flags & 0xFF, bool(flags & _COMPLEX_FLAG)
    mtype, payload, pos = _read_element(buf, pos, endian)
    dims = tuple(int(d) for d in _numeric(mtype, payload, endian))
    _, payload, pos = _read_element(buf, pos, endian)
    name = payload.decode("latin-1")
    count = int(np.prod(dims, dtype=np.int64))
    if mx_class == _MX_STRUCT:
        mtype, payload, pos = _read_element(buf, pos, endian)
        field_len = int(_numeric(mtype, payload, endian)[0])
        _, payload, pos = _read_element(buf, pos, endian)
        fields = [
            payload[i : i + field_len].split(b"\0", 1)[0].decode("latin-1")
            for i in range(0, len(payload), field_len)
        ]
        structs = []
        for _ in range(count):
            record = {}
            for field in fields:
                mtype, payload, pos = _read_element(buf, pos, endian)
                record[field] = _read_matrix(payload, endian)[1]
            structs.append(record)
        return name, structs
    if mx_class == _MX_CELL:
        cells = []
        for _ in range(count):
            mtype, payload, pos = _read_element(buf, pos, endian)
            cells.append(_read_matrix(payload, endian)[1])
        return name, cells
    if mx_class == _MX_CHAR:
        mtype, payload, pos = _read_element(buf, pos, endian)
        return name, _chars(mtype, payload, endian, dims)
    if mx_class in _MX_NUMERIC:
        mtype, payload, pos = _read_element(buf, pos, endian)
        values = _numeric(mtype, payload, endian).astype(_MX_NUMERIC[mx_class])
        if is_complex:
            mtype, payload, pos = _read_element(buf, pos, endian)
            values = values + 1j * _numeric(mtype, payload, endian)
        return name, values.reshape(dims, order="F")
    raise MatFileError(f"unsupported MATLAB array class {mx_class} for variable {name!r}")


def _chars(mtype: int, payload: bytes, endian: str, dims: tuple[int, ...]) -> str | list[str]:
    """Decode a char array; one row → ``str``, several rows → ``list[str]``."""
    if mtype in (_MI_UTF8, 1, 2):  # miUTF8, miINT8, miUINT8
        text = payload.decode("utf-8")
    elif mtype in (_MI_UTF16, 3, 4):  # miUTF16, miINT16, miUINT16 (UTF-16 code units)
        text = payload.decode("utf-16-le" if endian == "<" else "utf-16-be")
    elif mtype == _MI_UTF32:
        text = payload.decode("utf-32-le" if endian == "<" else "utf-32-be")
    else:
        raise MatFileError(f"unsupported char element type {mtype}")
    rows = dims[0] if dims else 1
    if rows <= 1:
        return text
    chars = np.array(list(text), dtype=object).reshape((rows, -1), order="F")
    return ["".join(row) for row in chars]
