"""The contract between the quantizer's shared framework and each format's arithmetic.

The framework (``hdl/quant/frame.py``) hands each accepted beat of sanitized elements to the format's
*block unit*, which reduces the block beat by beat as it comes in (its largest magnitude, or max and
min: a tree as wide as a beat) and derives the block header (the ggml scale fields) and the
per-block constants every lane needs; then the framework streams the block's elements, ``lanes``
per beat, through ``lanes`` copies of the format's *lane unit*, which turn one element into one
code.

Both units are fixed-latency pipelines gated by ``en``: every register in them updates only on cycles
with ``en`` high, and an output belongs to the input presented ``latency`` enabled cycles earlier. The
framework owns valid bits and bubbles and holds ``en`` high (it never stalls: its output queue takes
back-pressure); the unit tests toggle ``en``. So the units hold no handshake logic and stay easy to
prove equal to the golden model.
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from kvpath.config import BLOCK_ELEMS, ELEM_BITS, BlockFormat, check_elem

FP16 = unsigned(ELEM_BITS)


class BlockUnitSignature(wiring.Signature):
    """A block unit takes its block beat by beat while the framework collects it: ``beat``
    (``lanes`` elements; element ``b * lanes + i`` of the block at lane i of beat b), ``take`` (a
    beat is presented on this enabled cycle) and ``first`` (it is its block's beat 0) in; ``header``
    and ``const`` out for the block whose last beat was taken ``latency`` enabled cycles earlier."""

    def __init__(self, fmt: BlockFormat, const_layout: data.Layout, lanes: int):
        super().__init__({
            "en": In(1),
            "beat": In(data.ArrayLayout(FP16, lanes)),
            "take": In(1),
            "first": In(1),
            # ggml's scale fields, little-endian, first field in the low bits: byte k of the
            # block is header[8k:8k+8].
            "header": Out(unsigned(8 * fmt.header_bytes)),
            "const": Out(const_layout),
        })


class LaneUnitSignature(wiring.Signature):
    """One element ``x`` and its block's ``const`` in; its ``code`` out."""

    def __init__(self, fmt: BlockFormat, const_layout: data.Layout):
        super().__init__({
            "en": In(1),
            "x": In(FP16),
            "const": In(const_layout),
            "code": Out(unsigned(fmt.code_bits)),
        })


class FormatDatapath:
    """What a format contributes to the quantizer; subclasses live one per format (``BlockFormat.datapath``).

    Subclasses set ``fmt`` and ``const_layout`` and implement ``block_unit(lanes)`` and
    ``lane_unit()``, each returning a new ``wiring.Component`` with the signature above (the block
    unit's for ``lanes``) and an int attribute ``latency``.
    """

    fmt: BlockFormat
    const_layout: data.Layout

    def block_unit(self, lanes: int = BLOCK_ELEMS) -> wiring.Component:
        raise NotImplementedError

    def lane_unit(self) -> wiring.Component:
        raise NotImplementedError


class UnitTable(FormatDatapath):
    """A datapath that picks its units by element type from ``units``:
    ``{elem: (const_layout, block unit class, lane unit factory taking no argument)}``."""

    units: dict

    def __init__(self, fmt: str | None = None, elem: str = "fp16"):
        # ``fmt`` is the class's own (the registry passes it to every datapath alike).
        self.elem = check_elem(elem)
        self.const_layout, self._block, self._lane = self.units[self.elem]

    def block_unit(self, lanes: int = BLOCK_ELEMS) -> wiring.Component:
        return self._block(lanes)

    def lane_unit(self) -> wiring.Component:
        return self._lane()
