"""The element types kvpath knows: one table read by the RTL, the golden model, the driver and config.

K/V elements travel as IEEE-style binary floats: a sign bit, ``exp_bits`` of biased exponent and
``frac_bits`` of fraction. Every number the blocks need (field masks, bias, the largest finite
pattern, the subnormal quantum, the NumPy dtype) follows from those two widths, so nothing else in
kvpath spells them. FP32 is here for the arithmetic that ggml does in fp32 and for a later wider
element type; the K/V streams carry FP16 or BF16 (``STREAM_ELEMENTS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class ElementType:
    name: str
    exp_bits: int
    frac_bits: int
    numpy_name: str  # the NumPy (or ml_dtypes) dtype with these bits

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.frac_bits

    @property
    def sign_bit(self) -> int:
        return 1 << (self.bits - 1)

    @property
    def mag_mask(self) -> int:
        return self.sign_bit - 1

    @property
    def exp_mask(self) -> int:
        return ((1 << self.exp_bits) - 1) << self.frac_bits

    @property
    def frac_mask(self) -> int:
        return (1 << self.frac_bits) - 1

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def max_finite(self) -> int:
        """Pattern of the largest finite magnitude: kvpath saturates to it (IEEE would give Inf)."""
        return self.exp_mask - (1 << self.frac_bits) + self.frac_mask

    @property
    def inf(self) -> int:
        return self.exp_mask

    @property
    def min_exp(self) -> int:
        """Exponent of the subnormal quantum: the smallest magnitude is ``2**min_exp``."""
        return 1 - self.bias - self.frac_bits

    @property
    def dtype(self) -> np.dtype:
        if self.numpy_name == "bfloat16":
            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(self.numpy_name)


ELEMENTS: dict[str, ElementType] = {
    e.name: e
    for e in (
        ElementType("fp16", 5, 10, "float16"),
        ElementType("bf16", 8, 7, "bfloat16"),
        ElementType("fp32", 8, 23, "float32"),
    )
}
STREAM_ELEMENTS = ("fp16", "bf16")  # what the K/V streams and the generated blocks take


def lookup(table: dict, name: str, what: str):
    """``table[name]``, or a ValueError that lists the choices."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(table)}") from None


def element(name: str) -> ElementType:
    return lookup(ELEMENTS, name, "element type")


def stream_element(name: str) -> ElementType:
    """The element type of a K/V stream: FP16 or BF16."""
    if name not in STREAM_ELEMENTS:
        raise ValueError(f"unknown element type {name!r}; choose one of {', '.join(STREAM_ELEMENTS)}")
    return ELEMENTS[name]


def of_dtype(dtype) -> ElementType:
    """The stream element type of a NumPy dtype (float16 or ml_dtypes.bfloat16)."""
    for name in STREAM_ELEMENTS:
        if np.dtype(dtype) == ELEMENTS[name].dtype:
            return ELEMENTS[name]
    raise ValueError(f"K/V elements must be float16 or ml_dtypes.bfloat16, got {np.dtype(dtype)}")
