"""Logical dtypes -> what zarr stores, and the fill value that makes missing data visible.

zarr fills chunks that were never written with the fill value and says nothing, so float
arrays are filled with NaN: a unit that is not done reads as NaN, never as plausible zeros.
bfloat16 is neither a zarr nor a NumPy dtype: it is stored as its uint16 bit pattern (the
logical dtype is recorded in the array's attributes) and decoded to float32, which holds
every bfloat16 value exactly.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

BFLOAT16_NAN_BITS = 0x7FC0

STORAGE_DTYPES: dict[str, np.dtype | type] = {
    "float32": np.dtype("float32"),
    "float16": np.dtype("float16"),
    "bfloat16": np.dtype("uint16"),
    "int32": np.dtype("int32"),
    "int64": np.dtype("int64"),
    "uint32": np.dtype("uint32"),
    "bool": np.dtype("bool"),
    "str": str,
}

FILL_VALUES: dict[str, object] = {
    "float32": np.nan,
    "float16": np.nan,
    "bfloat16": BFLOAT16_NAN_BITS,
    "int32": 0,
    "int64": 0,
    "uint32": 0,
    "bool": False,
    "str": "",
}


def to_bfloat16_bits(values: ArrayLike) -> np.ndarray:
    """Round float values to bfloat16 (nearest, ties to even) and return the uint16 bits."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16
    return np.where(np.isnan(bits.view(np.float32)), BFLOAT16_NAN_BITS, rounded).astype(np.uint16)


def from_bfloat16_bits(bits: ArrayLike) -> np.ndarray:
    """The float32 values of bfloat16 bit patterns (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def encode(dtype: str, values: ArrayLike) -> np.ndarray:
    """Values as stored for a logical dtype; bfloat16 takes uint16 bits as is, floats rounded."""
    if dtype == "bfloat16":
        array = np.asarray(values)
        return array if array.dtype == np.uint16 else to_bfloat16_bits(array)
    return np.asarray(values, dtype=STORAGE_DTYPES[dtype])


def decode(dtype: str, stored: np.ndarray) -> np.ndarray:
    """Stored values as the logical dtype's NumPy form (bfloat16 -> float32)."""
    if dtype == "bfloat16":
        return from_bfloat16_bits(stored)
    if dtype == "str":
        return np.array(stored.tolist(), dtype=str)  # NumPy 2 StringDType -> plain `<U`
    return stored
